"""A second zoo, kept apart from the first: common architectures users bring that /work/zoo lacks.

    /work/tvenv/bin/python bench/zoo/export_more.py [--out /work/zoo2] [--only a,b] [--calib 16] [--holdout 8]

Same layout and tooling as ``export.py`` (model.onnx, calib.npz, holdout.npz, meta.json; seeded
random weights, BatchNorm statistics re-estimated on natural-looking data, classifier logits scaled
to a trained-like spread), so ``bench/zoo_bench.py --zoo /work/zoo2`` and ``ganglion convert`` take
these folders as they are. It widens the net rather than the fidelity table: exporters and opsets
(13, 17, 18, 20), inception/dense/grouped/attention blocks, segmentation heads with a dynamic H/W
pinned by ``--input-shape``, a detection backbone with an FPN, and text models fed int64 ids
(a transformer encoder, a bidirectional GRU, a 2-layer LSTM). Smaller inputs than the models' defaults where the
architecture allows it keep the 2-core machine usable; the structure is what is tested.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import synth
from export import SEED, _step, bn_batches, export, folder_for, inputs_meta, write_data, write_meta
from tune import last_linear, recalibrate_bn, scale_output

# name: (constructor, input side, exporter, opset or None for the exporter's default)
CLASSIFIERS = {
    "googlenet_ts": (lambda: torchvision.models.googlenet(aux_logits=False, init_weights=True), 224, "ts", None),
    "densenet121_ts": (torchvision.models.densenet121, 224, "ts", None),
    "mnasnet0_5_dynamo": (torchvision.models.mnasnet0_5, 224, "dynamo", 18),
    "squeezenet1_1_ts13": (torchvision.models.squeezenet1_1, 224, "ts", 13),
    "resnext50_32x4d_ts": (torchvision.models.resnext50_32x4d, 160, "ts", None),
    "wide_resnet50_2_dynamo": (torchvision.models.wide_resnet50_2, 160, "dynamo", 20),
    "efficientnet_v2_s_dynamo": (torchvision.models.efficientnet_v2_s, 192, "dynamo", 20),
    "maxvit_t_ts": (torchvision.models.maxvit_t, 224, "ts", None),
    "mobilenet_v3_large_ts13": (torchvision.models.mobilenet_v3_large, 224, "ts", 13),
    # session 9: more of what users bring -- Swin V2's cosine attention and log-spaced position MLP,
    # Inception v3's asymmetric kernels, the dynamo exporter at opset 18 on the common ResNet-50
    "swin_v2_t_ts": (torchvision.models.swin_v2_t, 256, "ts", None),
    "inception_v3_ts": (lambda: torchvision.models.inception_v3(aux_logits=False, init_weights=True), 224, "ts", None),
    "resnet50_dynamo": (torchvision.models.resnet50, 192, "dynamo", 18),
    "mobilenet_v3_large_dynamo": (torchvision.models.mobilenet_v3_large, 224, "dynamo", None),
    "efficientnet_b1_ts": (torchvision.models.efficientnet_b1, 224, "ts", None),
    "regnet_x_400mf_ts": (torchvision.models.regnet_x_400mf, 224, "ts", None),
}


def _images(rng, n: int, side: int) -> np.ndarray:
    return synth.natural_images(rng, n, side, side)


def make_classifier(out: Path, name: str, n_calib: int, n_holdout: int) -> None:
    build, side, exporter, opset = CLASSIFIERS[name]
    rng = np.random.default_rng([SEED, side])
    train, calib, holdout = _images(rng, 16, side), _images(rng, n_calib, side), _images(rng, n_holdout, side)
    torch.manual_seed(SEED)
    model = recalibrate_bn(build(), bn_batches(train, 8))
    scale_output(model, last_linear(model) if name != "squeezenet1_1_ts13" else model.classifier[1],
                 bn_batches(train[:8], 8), 3.0)
    _write(out, name, model, {"input": calib[:, None]}, {"input": holdout[:, None]}, ["logits"],
           exporter, opset, task="classification", source=f"torchvision {name.rsplit('_', 1)[0]}, seeded random weights",
           outputs={"logits": "class_logits"})


def make_segmentation(out: Path, n_calib: int, n_holdout: int) -> None:
    """DeepLabV3 / LR-ASPP (MobileNetV3-large) and FCN-ResNet50: dynamic H/W, pinned at 256x256."""
    seg = torchvision.models.segmentation
    for name, build in (("deeplabv3_mobilenet_v3_large_dynhw", seg.deeplabv3_mobilenet_v3_large),
                        ("lraspp_mobilenet_v3_large_dynhw", seg.lraspp_mobilenet_v3_large),
                        ("fcn_resnet50_dynhw", seg.fcn_resnet50)):
        rng = np.random.default_rng([SEED, len(name)])
        side = 256
        train, calib, holdout = _images(rng, 16, side), _images(rng, n_calib, side), _images(rng, n_holdout, side)
        torch.manual_seed(SEED)
        net = build(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
        model = recalibrate_bn(_OutOnly(net), bn_batches(train, 8))
        axes = {"input": {0: "batch", 2: "h", 3: "w"}, "out": {0: "batch", 2: "h", 3: "w"}}
        _write(out, name, model, {"input": calib[:, None]}, {"input": holdout[:, None]}, ["out"], "ts", None,
               axes=axes, pins={"input": [1, 3, side, side]}, task="segmentation",
               source=f"torchvision {name[:-6]}, 21 classes, dynamic H/W", outputs={"out": "class logits per pixel"})


class _OutOnly(torch.nn.Module):
    """torchvision segmentation models return a dict; exporters want tensors."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


class _SsdLiteHead(torch.nn.Module):
    """SSDlite320-MobileNetV3 without its box decoding and NMS: backbone features -> head logits."""

    def __init__(self):
        super().__init__()
        det = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
        self.backbone, self.head = det.backbone, det.head

    def forward(self, x):
        out = self.head(list(self.backbone(x).values()))
        return out["bbox_regression"], out["cls_logits"]


class _FpnBackbone(torch.nn.Module):
    """Faster R-CNN's MobileNetV3-large FPN backbone: the feature pyramid a detector head reads."""

    def __init__(self):
        super().__init__()
        det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
        self.body = det.backbone

    def forward(self, x):
        return tuple(self.body(x).values())


def make_detection(out: Path, n_calib: int, n_holdout: int) -> None:
    rng = np.random.default_rng([SEED, 320])
    train, calib, holdout = (synth.natural_images(rng, n, 320, 320, imagenet=False) for n in (16, n_calib, n_holdout))
    for name, net, outs in (("ssdlite320_head_ts", _SsdLiteHead, ["bbox_regression", "cls_logits"]),
                            ("fpn_mobilenet_v3_320_dynamo", _FpnBackbone, ["p0", "p1", "pool"])):
        torch.manual_seed(SEED)
        model = recalibrate_bn(net(), bn_batches(train, 8))
        _write(out, name, model, {"images": calib[:, None]}, {"images": holdout[:, None]}, outs,
               "dynamo" if "dynamo" in name else "ts", None, task="detection",
               source=f"torchvision {name}, no post-processing", outputs={o: "head/backbone output" for o in outs})


class _TextEncoder(torch.nn.Module):
    """int64 ids -> Embedding (+ learned positions) -> 2 nn.TransformerEncoderLayer -> mean -> Linear."""

    def __init__(self, vocab: int = 3000, d: int = 128, seq: int = 48):
        super().__init__()
        self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Parameter(torch.randn(1, seq, d) * 0.1)
        layer = torch.nn.TransformerEncoderLayer(d, 4, 256, dropout=0.0, batch_first=True, activation="gelu")
        self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = torch.nn.Linear(d, 4)

    def forward(self, ids):
        return self.fc(self.enc(self.emb(ids) + self.pos).mean(1))


class _GruTagger(torch.nn.Module):
    """int64 ids -> Embedding -> bidirectional 1-layer GRU -> per-token Linear (a sequence tagger)."""

    def __init__(self, vocab: int = 3000, d: int = 64):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.gru = torch.nn.GRU(d, d, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(2 * d, 9)

    def forward(self, ids):
        return self.fc(self.gru(self.emb(ids))[0])


class _LstmClassifier(torch.nn.Module):
    """int64 ids -> Embedding -> 2-layer LSTM -> last step -> Linear (a sentence classifier)."""

    def __init__(self, vocab: int = 3000, d: int = 64):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.lstm = torch.nn.LSTM(d, d, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(d, 3)

    def forward(self, ids):
        return self.fc(self.lstm(self.emb(ids))[0][:, -1])


def make_text(out: Path, n_calib: int, n_holdout: int) -> None:
    rng = np.random.default_rng([SEED, 48])
    ids, _ = synth.token_ids(rng, n_calib + n_holdout, 48, 3000)
    calib, holdout = {"input_ids": ids[:n_calib, None]}, {"input_ids": ids[n_calib:, None]}
    for name, net, exporter in (("text_transformer_ts", _TextEncoder, "ts"), ("gru_tagger_ts", _GruTagger, "ts"),
                                ("gru_tagger_dynamo", _GruTagger, "dynamo"),
                                ("text_transformer_dynamo", _TextEncoder, "dynamo"),
                                ("lstm_classifier_ts", _LstmClassifier, "ts"),
                                ("lstm_classifier_dynamo", _LstmClassifier, "dynamo")):
        torch.manual_seed(SEED)
        model = net().eval()
        _write(out, name, model, calib, holdout, ["logits"], exporter, None, task="text",
               source=f"{net.__doc__.splitlines()[0]}", outputs={"logits": "logits"})


def _write(out, name, model, calib, holdout, outs, exporter, opset, *, axes=None, pins=None, task, source, outputs):
    folder = folder_for(out, name)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a[0])) for a in calib.values())
    written = export(model, args, folder / "model.onnx", dynamo=exporter == "dynamo", inputs=list(calib),
                     outputs=outs, opset=opset, dynamic_axes=axes)
    write_data(folder, calib, holdout)
    write_meta(folder, task=task, source=source, exporter="dynamo" if exporter == "dynamo" else "torchscript",
               opset=written, inputs=inputs_meta(calib), input_shapes=pins or {}, outputs=outputs,
               primary_output=outs[0], dynamic="batch+spatial" if axes else None)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/work/zoo2"))
    p.add_argument("--only", help="comma-separated: classifiers, <classifier name>, segmentation, detection, text")
    p.add_argument("--calib", type=int, default=16)
    p.add_argument("--holdout", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    only = set(args.only.split(",")) if args.only else None
    want = lambda group: only is None or group in only                      # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for name in CLASSIFIERS:
        if want("classifiers") or want(name):
            _step(name, t0, make_classifier, args.out, name, args.calib, args.holdout)
    for group, fn in (("segmentation", make_segmentation), ("detection", make_detection), ("text", make_text)):
        if want(group):
            _step(group, t0, fn, args.out, args.calib, args.holdout)
    print(f"zoo written to {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
