"""Train a small CNN on scikit-learn's bundled 8x8 digits in pure NumPy and export it as ONNX.

No download and no deep-learning framework: the digits ship inside scikit-learn, and the
network (Conv 3x3 -> ReLU -> MaxPool -> Conv 3x3 -> ReLU -> MaxPool -> Flatten -> Gemm) is
trained here with im2col convolutions, softmax cross-entropy and Adam, seeded, in a few
seconds. It is the project's one *trained* model: the converter's int8 accuracy test and the
demo use it, because random-weight models cannot show that accuracy survives quantization.

    python -m examples.models.digits_cnn [OUT_DIR]      (default: examples/digits)

writes digits_cnn.onnx, calib.npz (200 training images), holdout.npz (held-out images),
holdout_labels.npy (their classes) and labels.txt (class names). Pixels are scaled to [0, 1]
(raw value / 16); every file is deterministic for a given seed.
"""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from examples.models.graph import GraphBuilder

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "digits"
INPUT = "input"
C1, C2, CLASSES = 16, 32, 10


# --- layers (forward returns a cache for backward) ---------------------------------------------
def _im2col(x: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B*H*W, C*9) patches of a 3x3 'same' convolution."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = sliding_window_view(xp, (3, 3), axis=(2, 3))           # B, C, H, W, 3, 3
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(b * h * w, c * 9)


def conv_forward(x, w, bias):
    b, _, h, wd = x.shape
    cols = _im2col(x)
    out = cols @ w.reshape(w.shape[0], -1).T + bias
    return out.reshape(b, h, wd, -1).transpose(0, 3, 1, 2), (x.shape, cols)


def conv_backward(dout, w, cache):
    (b, c, h, wd), cols = cache
    d = dout.transpose(0, 2, 3, 1).reshape(-1, w.shape[0])
    dw = (d.T @ cols).reshape(w.shape)
    dcols = (d @ w.reshape(w.shape[0], -1)).reshape(b, h, wd, c, 3, 3)
    dxp = np.zeros((b, c, h + 2, wd + 2), dout.dtype)
    for i in range(3):           # col2im: each kernel tap adds back into its shifted window
        for j in range(3):
            dxp[:, :, i:i + h, j:j + wd] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1], dw, d.sum(axis=0)


def pool_forward(x):
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    mask = blocks == out[:, :, :, None, :, None]
    return out, mask / mask.sum(axis=(3, 5), keepdims=True)


def pool_backward(dout, mask):
    b, c, h2, _, w2, _ = mask.shape
    return (mask * dout[:, :, :, None, :, None]).reshape(b, c, h2 * 2, w2 * 2)


# --- the network -------------------------------------------------------------------------------
def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape, fan_in):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    return {"w1": he((C1, 1, 3, 3), 9), "b1": np.zeros(C1, np.float32),
            "w2": he((C2, C1, 3, 3), C1 * 9), "b2": np.zeros(C2, np.float32),
            "w3": he((CLASSES, C2 * 4), C2 * 4) / np.sqrt(2), "b3": np.zeros(CLASSES, np.float32)}


def forward(p, x):
    h1, c1 = conv_forward(x, p["w1"], p["b1"])
    a1 = np.maximum(h1, 0)
    q1, m1 = pool_forward(a1)
    h2, c2 = conv_forward(q1, p["w2"], p["b2"])
    a2 = np.maximum(h2, 0)
    q2, m2 = pool_forward(a2)
    flat = q2.reshape(len(x), -1)
    logits = flat @ p["w3"].T + p["b3"]
    return logits, (c1, h1, m1, c2, h2, m2, flat, q2.shape)


def backward(p, cache, dlogits):
    c1, h1, m1, c2, h2, m2, flat, q2_shape = cache
    g = {"w3": dlogits.T @ flat, "b3": dlogits.sum(axis=0)}
    dq2 = (dlogits @ p["w3"]).reshape(q2_shape)
    dh2 = pool_backward(dq2, m2) * (h2 > 0)
    dq1, g["w2"], g["b2"] = conv_backward(dh2, p["w2"], c2)
    dh1 = pool_backward(dq1, m1) * (h1 > 0)
    _, g["w1"], g["b1"] = conv_backward(dh1, p["w1"], c1)
    return g


def softmax_xent(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    loss = -np.log(prob[np.arange(len(labels)), labels] + 1e-12).mean()
    prob[np.arange(len(labels)), labels] -= 1.0
    return loss, prob / len(labels)


def train(x, y, *, epochs=30, batch=32, lr=3e-3, seed=0):
    """Adam over shuffled mini-batches; returns the parameters."""
    rng = np.random.default_rng(seed)
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step, (b1, b2) = 0, (0.9, 0.999)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            logits, cache = forward(p, x[idx])
            _, dlogits = softmax_xent(logits, y[idx])
            grads = backward(p, cache, dlogits)
            step += 1
            for k in p:
                m[k] = b1 * m[k] + (1 - b1) * grads[k]
                v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
                mhat, vhat = m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)
                p[k] = (p[k] - lr * mhat / (np.sqrt(vhat) + 1e-8)).astype(np.float32)
    return p


def accuracy(p, x, y) -> float:
    return float((forward(p, x)[0].argmax(axis=1) == y).mean())


# --- export ------------------------------------------------------------------------------------
def to_onnx(p: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The trained network as an opset-17 ONNX graph for a 1x1x8x8 input."""
    g = GraphBuilder()
    h = INPUT
    for w, b in (("w1", "b1"), ("w2", "b2")):
        h = g.node("Conv", [h, g.const(w, p[w]), g.const(b, p[b])], "conv",
                   kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = g.node("Relu", [h])
        h = g.node("MaxPool", [h], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    h = g.node("Flatten", [h], "flatten", axis=1)
    g.nodes.append(onnx.helper.make_node("Gemm", [h, g.const("fc_w", p["w3"]), g.const("fc_b", p["b3"])],
                                         ["logits"], name="classifier", transB=1))
    return g.model("digits_cnn", [(INPUT, [1, 1, 8, 8])], [("logits", [1, CLASSES])])


def load_split(seed: int = 0):
    """Train/holdout split of sklearn's digits, pixels in [0, 1], NCHW float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    return train_test_split(x, d.target.astype(np.int64), test_size=0.25, stratify=d.target,
                            random_state=seed)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, but byte-for-byte reproducible (fixed zip timestamps), so commits stay clean."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    path.write_bytes(buf.getvalue())


def build(seed: int = 0, epochs: int = 30) -> tuple[onnx.ModelProto, dict]:
    """Train and export. Returns (model, info) where info holds the splits and float accuracy."""
    x_tr, x_ho, y_tr, y_ho = load_split(seed)
    params = train(x_tr, y_tr, epochs=epochs, seed=seed)
    info = {"calib": x_tr[:200], "holdout": x_ho, "holdout_labels": y_ho,
            "train_accuracy": accuracy(params, x_tr, y_tr), "holdout_accuracy": accuracy(params, x_ho, y_ho)}
    return to_onnx(params), info


def write(out_dir: Path, seed: int = 0) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = build(seed)
    onnx.save(model, out_dir / "digits_cnn.onnx")
    save_npz(out_dir / "calib.npz", {INPUT: info["calib"]})
    save_npz(out_dir / "holdout.npz", {INPUT: info["holdout"]})
    np.save(out_dir / "holdout_labels.npy", info["holdout_labels"], allow_pickle=False)
    (out_dir / "labels.txt").write_text("".join(f"{i}\n" for i in range(CLASSES)))
    return info


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    result = write(out)
    print(f"wrote {out}: float accuracy train {result['train_accuracy']:.4f}, "
          f"holdout {result['holdout_accuracy']:.4f} ({len(result['holdout'])} images)")
