"""Train the two example sequence classifiers (one LSTM, one bidirectional... see below) and export them.

Task: which waveform is this? 5 classes -- sine, square, sawtooth, triangle, noise -- with a random
frequency (1.5-5 cycles per window), phase, amplitude (0.5-1.5) and additive Gaussian noise
(sigma 0.15-0.45), 64 samples fed as T=32 steps of 2 samples. Synthetic and seeded, so the script
rebuilds the committed files on this machine.

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
STEPS, FEATURES, CLASSES = 32, 2, ("sine", "square", "sawtooth", "triangle", "noise")


def waveforms(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, STEPS * FEATURES, endpoint=False)
    labels = rng.integers(0, len(CLASSES), n)
    x = np.empty((n, STEPS * FEATURES), np.float32)
    for k, label in enumerate(labels):
        phase = 2 * np.pi * (rng.uniform(1.5, 5.0) * t + rng.uniform())
        frac = (phase / (2 * np.pi)) % 1.0
        wave = [np.sin(phase), np.sign(np.sin(phase)), 2 * frac - 1, 2 * np.abs(2 * frac - 1) - 1,
                rng.normal(0, 0.6, t.shape)][label]
        x[k] = rng.uniform(0.5, 1.5) * wave + rng.normal(0, rng.uniform(0.15, 0.45), t.shape)
    return x.reshape(n, STEPS, FEATURES), labels


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


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 30) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(model, torch.zeros(1, STEPS, FEATURES), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)


def main(out: Path = HERE) -> None:
    torch.manual_seed(0)
    x, y = waveforms(4000, seed=1)
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
