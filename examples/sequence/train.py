"""Train the two example sequence classifiers (a bidirectional LSTM and a GRU) and export them to ONNX.

Task: which waveform is this (``data.py``: 5 classes, 64 noisy samples fed as T=32 steps of 2)?
Synthetic and seeded: the data files are rebuilt exactly; the weights on this machine's torch.

Models (PyTorch, exported with the TorchScript exporter at opset 17, batch 1, batch-first input
``input`` [1, 32, 2], output ``logits`` [1, 5]):
    lstm_classifier.onnx  bidirectional LSTM (hidden 32), both final states -> Linear
    gru_classifier.onnx   GRU (hidden 48), mean of Y over time -> Linear

Files written next to this script: the two models, ``calib.npz`` (200 training sequences,
array ``input``), ``holdout.npz`` (400 held-out sequences, array ``input``) and
``holdout_labels.npy``. Needs torch (a dev tool, never a project dependency):

    /work/tvenv/bin/python examples/sequence/train.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # run as a script from anywhere
from examples.sequence.data import CLASSES, FEATURES, STEPS, waveforms  # noqa: E402


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, 32, batch_first=True, bidirectional=True)
        self.head = nn.Linear(64, len(CLASSES))

    def forward(self, x):
        _, (h, _) = self.rnn(x)                       # h: [2, B, 32]
        return self.head(torch.cat([h[0], h[1]], dim=1))


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(FEATURES, 48, batch_first=True)
        self.head = nn.Linear(48, len(CLASSES))

    def forward(self, x):
        y, _ = self.rnn(x)                            # y: [B, T, 48]
        return self.head(y.mean(dim=1))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 45) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 100):
            idx = perm[i:i + 100]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(model, torch.zeros(1, STEPS, FEATURES), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)


def main(out: Path = HERE) -> None:
    torch.set_num_threads(1)          # tiny matrices: more threads only spin against each other
    torch.manual_seed(0)
    x, y = waveforms(3000, seed=1)
    hx, hy = waveforms(400, seed=2)
    for name, model in (("lstm_classifier", LSTMClassifier()), ("gru_classifier", GRUClassifier())):
        torch.manual_seed(0)
        train(model, x, y)
        print(f"{name}: held-out accuracy {accuracy(model, hx, hy):.4f}")
        export(model, out / f"{name}.onnx")
    np.savez_compressed(out / "calib.npz", input=x[:200])
    np.savez_compressed(out / "holdout.npz", input=hx)
    np.save(out / "holdout_labels.npy", hy.astype(np.int64))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
