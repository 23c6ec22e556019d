"""Export the fidelity-bench models: torchvision architectures, seeded random weights, BatchNorm
statistics re-estimated on data, TorchScript exporter at opset 17. A dev script: it runs under a
throwaway venv with torch + torchvision (never a project dependency), e.g.

    /work/tvenv/bin/python bench/fidelity/export.py --out /work/fid [--models convnext_tiny,vit_small]

Per model it writes MODEL.onnx, MODEL_calib.npz (--calib samples) and MODEL_eval.npz (--eval
samples), both keyed by the ONNX input name ("input"). The images are "natural-ish" synthetic
photos (1/f noise, smooth colour gradients, blobs and rectangles, ImageNet-normalised), so
activation statistics look like real data's rather than white noise's.

Random-init quirks fixed so the outputs mean something: torchvision zero-initialises the ViT
head (its output would be all zeros) and initialises ConvNeXt's layer scale to 1e-6 (every block
an identity); both are re-drawn here, seeded, at magnitudes trained models have.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def synthetic_images(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` ImageNet-normalised [3, size, size] float32 images with natural-image statistics."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size) ** 1.0
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), np.float32)
    for k in range(n):
        spectrum = falloff * np.exp(2j * np.pi * rng.random((size, size)))
        noise = np.real(np.fft.ifft2(spectrum))
        noise = (noise - noise.mean()) / (noise.std() + 1e-9)
        colour = rng.normal(size=(3, 1, 1)) * 0.15
        img = 0.5 + colour * noise[None] * rng.uniform(0.5, 1.5)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        img += rng.normal(size=(3, 1, 1)) * 0.2 * ramp[None]
        for _ in range(rng.integers(2, 6)):              # soft blobs
            cy, cx, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += rng.normal(size=(3, 1, 1)) * 0.3 * blob[None]
        for _ in range(rng.integers(0, 4)):              # hard-edged rectangles
            y0, x0 = rng.integers(0, size, 2)
            h, w = rng.integers(size // 10, size // 2, 2)
            img[:, y0:y0 + h, x0:x0 + w] = rng.random((3, 1, 1))
        img = np.clip(img, 0.0, 1.0)
        out[k] = (img - MEAN) / STD
    return out


def conv(cin: int, cout: int, k: int = 3, s: int = 1) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                               torch.nn.BatchNorm2d(cout), torch.nn.SiLU())


class Block(torch.nn.Module):
    """A C2f-style block: split, two residual 3x3 pairs, concat, 1x1."""

    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = conv(c // 2, c // 2), conv(c // 2, c // 2)
        self.out = conv(c * 3 // 2, c, 1)

    def forward(self, x):
        left, right = x.chunk(2, 1)
        y = right + self.b(self.a(right))
        return self.out(torch.cat([left, right, y], 1))


class Detector(torch.nn.Module):
    """A YOLO-style 640x640 detector: CSP backbone, SPPF, FPN with upsample + concat, three heads
    whose outputs (box regression and sigmoid class scores) are concatenated over 8400 anchors."""

    def __init__(self, classes: int = 80):
        super().__init__()
        w = [16, 32, 64, 128, 256]
        self.stem = conv(3, w[0], 3, 2)
        self.stages = torch.nn.ModuleList(
            torch.nn.Sequential(conv(w[i], w[i + 1], 3, 2), Block(w[i + 1])) for i in range(4))
        self.sppf_in, self.sppf_out = conv(w[4], w[3], 1), conv(w[3] * 4, w[4], 1)
        self.pool = torch.nn.MaxPool2d(5, 1, 2)
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.fpn4, self.fpn3 = conv(w[4] + w[3], w[3], 1), conv(w[3] + w[2], w[2], 1)
        self.heads = torch.nn.ModuleList(
            torch.nn.Sequential(conv(c, 64), torch.nn.Conv2d(64, 4 + classes, 1)) for c in (w[2], w[3], w[4]))

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        p3, p4, p5 = feats[1:]
        y = self.sppf_in(p5)
        y1 = self.pool(y)
        y2 = self.pool(y1)
        p5 = self.sppf_out(torch.cat([y, y1, y2, self.pool(y2)], 1))
        p4 = self.fpn4(torch.cat([self.up(p5), p4], 1))
        p3 = self.fpn3(torch.cat([self.up(p4), p3], 1))
        outs = []
        for head, p in zip(self.heads, (p3, p4, p5)):
            o = head(p).flatten(2)
            outs.append(torch.cat([o[:, :4], o[:, 4:].sigmoid()], 1))
        return torch.cat(outs, 2)


def build(name: str) -> torch.nn.Module:
    tv = torchvision.models
    if name == "yolo_640":
        return Detector()
    if name == "vit_small":
        return tv.VisionTransformer(image_size=224, patch_size=16, num_layers=4, num_heads=3,
                                    hidden_dim=192, mlp_dim=768, num_classes=1000)
    return getattr(tv, name)(weights=None)


def fix_init(name: str, model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        if name == "vit_small":
            head = model.heads.head
            head.weight.normal_(0.0, 0.05, generator=gen)
            head.bias.normal_(0.0, 0.01, generator=gen)
        for mod in model.modules():
            scale = getattr(mod, "layer_scale", None)
            if isinstance(scale, torch.nn.Parameter):
                scale.copy_(torch.rand(scale.shape, generator=gen) * 0.4 + 0.1)


def reestimate_bn(model: torch.nn.Module, images: np.ndarray, batch: int = 16) -> None:
    """BatchNorm running statistics from the data (train mode, cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(torch.from_numpy(images[start:start + batch]))
    model.eval()


def export(name: str, out: Path, n_calib: int, n_eval: int, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(name)
    fix_init(name, model, gen)
    size = SIZES.get(name, 224)
    bn_data = synthetic_images(32 if size > 224 else 64, size, seed + 1000)
    reestimate_bn(model, bn_data)
    model.eval()
    x = torch.from_numpy(synthetic_images(1, size, seed + 2000))
    path = out / f"{name}.onnx"
    torch.onnx.export(model, x, str(path), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"])
    np.savez(out / f"{name}_calib.npz", input=synthetic_images(n_calib, size, seed + 1))
    np.savez(out / f"{name}_eval.npz", input=synthetic_images(n_eval, size, seed + 2))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


MODELS = ("convnext_tiny", "vit_small", "mobilenet_v3_small", "efficientnet_b0")
SIZES = {"yolo_640": 640}      # the speed-and-memory model (export with --models yolo_640 --calib 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/work/fid"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--eval", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for name in args.models.split(","):
        export(name, args.out, args.calib, args.eval, args.seed)


if __name__ == "__main__":
    main()
