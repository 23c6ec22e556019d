"""Write the model zoo for bench/zoo_bench.py: models like the ones users bring, with their data.

    /work/tvenv/bin/python bench/zoo/export.py [--out /work/zoo] [--only a,b] [--calib 32] [--holdout 16]

Needs torch + torchvision + onnxscript + onnxruntime (a dev venv; never a project dependency,
never in CI: see bench/README.md). One folder per model under --out:

    model.onnx    the graph (one file, no external data)
    calib.npz     one array per input name, first axis = samples, the rest = the input's pinned
                  shape (what `ganglion convert --calib` takes)
    holdout.npz   the same layout, other samples (fidelity is measured on these)
    meta.json     task, source, inputs (pinned shapes), input_shapes to pin (dynamic dims beyond
                  the batch), outputs and their kind, the primary output, expect (convert|refuse),
                  prequantized, extra convert flags (none so far)

Weights are random and seeded; every BatchNorm's statistics are re-estimated on natural-looking
data (train-mode passes with momentum=None, cumulative averages), so activations have the ranges
of a trained network rather than of an initialiser. ConvNeXt's layer scales (1e-6 at init, which
would make every block an identity) are set to trained-like values.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision

import nets
import synth
from tune import last_linear, recalibrate_bn, scale_output

SEED = 0
TV_ARCHS = ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "resnet18", "shufflenet_v2_x1_0",
            "convnext_tiny", "swin_t", "vit_small", "regnet_y_400mf"]


# --- helpers ----------------------------------------------------------------------------------
def export(model, args: tuple, path: Path, *, dynamo: bool, inputs: list[str], outputs: list[str],
           opset: int | None = None, dynamic_axes: dict | None = None) -> int:
    """torch.onnx.export with one of the two exporters; returns the opset written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, args, str(path), dynamo=True, opset_version=opset or 20, input_names=inputs,
                              output_names=outputs, external_data=False, verbose=False)
        else:
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset or 17, input_names=inputs,
                              output_names=outputs, dynamic_axes=dynamic_axes)
    m = onnx.load(str(path))
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def write_data(folder: Path, calib: dict, holdout: dict) -> None:
    np.savez(folder / "calib.npz", **calib)
    np.savez(folder / "holdout.npz", **holdout)


def write_meta(folder: Path, **meta) -> None:
    meta.setdefault("input_shapes", {})
    meta.setdefault("convert_flags", [])
    meta.setdefault("expect", "convert")
    meta.setdefault("prequantized", False)
    (folder / "meta.json").write_text(json.dumps({"name": folder.name, **meta}, indent=2) + "\n")


def inputs_meta(arrays: dict) -> dict:
    return {k: {"shape": list(v.shape[1:]), "dtype": str(v.dtype)} for k, v in arrays.items()}


def folder_for(out: Path, name: str) -> Path:
    folder = out / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def bn_batches(x: np.ndarray, size: int = 16):
    return [(torch.from_numpy(x[i:i + size]),) for i in range(0, len(x), size)]


# --- torchvision classifiers through both exporters ---------------------------------------------
def torchvision_model(arch: str) -> torch.nn.Module:
    if arch == "vit_small":       # ViT-Tiny-like: 4 layers, hidden 192, 3 heads
        return torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=4, num_heads=3,
                                                    hidden_dim=192, mlp_dim=768)
    model = getattr(torchvision.models, arch)()
    if arch == "convnext_tiny":   # trained layer scales sit around 0.05-1, not the 1e-6 of the initialiser
        g = torch.Generator().manual_seed(SEED)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.data = (torch.rand(p.shape, generator=g) * 0.5 + 0.05)
    return model


def make_torchvision(out: Path, arch: str, data: dict) -> None:
    torch.manual_seed(SEED)
    model = recalibrate_bn(torchvision_model(arch), bn_batches(data["train"]))
    scale_output(model, last_linear(model), bn_batches(data["train"]), 3.0)     # trained-like logits
    x = torch.from_numpy(data["calib"][:1])
    calib, holdout = {"input": data["calib"][:, None]}, {"input": data["holdout"][:, None]}
    variants = [("ts", False, None), ("dynamo", True, None)]
    if arch == "shufflenet_v2_x1_0":
        variants.append(("ts_dynbatch", False, {"input": {0: "batch"}, "logits": {0: "batch"}}))
    for tag, dynamo, axes in variants:
        folder = folder_for(out, f"{arch}_{tag}")
        opset = export(model, (x,), folder / "model.onnx", dynamo=dynamo, inputs=["input"], outputs=["logits"],
                       dynamic_axes=axes)
        write_data(folder, calib, holdout)
        write_meta(folder, task="classification", source=f"torchvision {arch}, seeded random weights",
                   exporter="dynamo" if dynamo else "torchscript", opset=opset, inputs=inputs_meta(calib),
                   outputs={"logits": "class_logits"}, primary_output="logits",
                   dynamic="batch" if axes else None)


# --- detectors ------------------------------------------------------------------------------
def make_yolo(out: Path, rng, n_calib: int, n_holdout: int) -> None:
    for size in (640, 320):
        images = synth.natural_images(rng, 32 + n_calib + n_holdout, size, size, imagenet=False)
        train, calib, holdout = images[:32], images[32:32 + n_calib, None], images[32 + n_calib:, None]
        torch.manual_seed(SEED)
        model = recalibrate_bn(nets.YoloV8(size), bn_batches(train, 8))
        for box, cls in zip(model.detect.cv2, model.detect.cv3):     # peaky DFL bins, some confident classes
            scale_output(model, box[-1], bn_batches(train[:8], 8), 3.0)
            scale_output(model, cls[-1], bn_batches(train[:8], 8), 2.5)
        x = torch.from_numpy(calib[0])
        variants = [("ts", False)] + ([("dynamo", True)] if size == 320 else [])
        for tag, dynamo in variants:
            folder = folder_for(out, f"yolov8n_{size}_{tag}")
            opset = export(model, (x,), folder / "model.onnx", dynamo=dynamo, inputs=["images"], outputs=["output0"])
            write_data(folder, {"images": calib}, {"images": holdout})
            write_meta(folder, task="detection", source=f"YOLOv8n-style detector {size}x{size}, seeded random weights",
                       exporter="dynamo" if dynamo else "torchscript", opset=opset,
                       inputs=inputs_meta({"images": calib}),
                       outputs={"output0": "boxes_xywh+class_scores [1, 84, anchors]"}, primary_output="output0")
        if size == 320:
            model.postprocess = True
            folder = folder_for(out, "yolov8n_320_postproc")
            opset = export(model, (x,), folder / "model.onnx", dynamo=False, inputs=["images"],
                           outputs=["boxes", "scores", "classes"])
            write_data(folder, {"images": calib}, {"images": holdout})
            write_meta(folder, task="detection", source="YOLOv8n-style 320 with in-graph TopK + score threshold",
                       exporter="torchscript", opset=opset, inputs=inputs_meta({"images": calib}),
                       outputs={"boxes": "boxes", "scores": "scores", "classes": "class ids"},
                       primary_output="scores", expect="refuse",
                       why="data-dependent post-processing (NonZero/TopK): expected a clear refusal")


def make_yolov5(out: Path, rng, n_calib: int, n_holdout: int) -> None:
    images = synth.natural_images(rng, 32 + n_calib + n_holdout, 640, 640, imagenet=False)
    train, calib, holdout = images[:32], images[32:32 + n_calib, None], images[32 + n_calib:, None]
    torch.manual_seed(SEED)
    model = recalibrate_bn(nets.YoloV5(640), bn_batches(train, 8))
    for conv in model.detect.m:                         # objectness/class logits that vary like trained ones
        scale_output(model, conv, bn_batches(train[:8], 8), 2.5)
    folder = folder_for(out, "yolov5n_640_ts")
    opset = export(model, (torch.from_numpy(calib[0]),), folder / "model.onnx", dynamo=False, inputs=["images"],
                   outputs=["output0"])
    write_data(folder, {"images": calib}, {"images": holdout})
    write_meta(folder, task="detection", source="YOLOv5n-style detector 640x640, anchor-based head, seeded random weights",
               exporter="torchscript", opset=opset, inputs=inputs_meta({"images": calib}),
               outputs={"output0": "xywh+objectness+class scores [1, 25200, 85]"}, primary_output="output0")


# --- OCR ------------------------------------------------------------------------------------
OCR_OPSET = 12     # paddle2onnx-era exports: Unsqueeze/Squeeze axes as attributes, no HardSwish op


def make_ocr(out: Path, rng, n_calib: int, n_holdout: int) -> None:
    size = 480
    pages = synth.text_pages(rng, 16 + n_calib + n_holdout, size, size)
    torch.manual_seed(SEED)
    db = recalibrate_bn(nets.DBNet(), bn_batches(pages[:16], 8))
    _ocr_folder(out, "ocr_det_dbnet", db, pages[16:], n_calib, "x", ["sigmoid_0"],
                {"x": {0: "batch", 2: "h", 3: "w"}, "sigmoid_0": {0: "batch", 2: "h", 3: "w"}},
                task="text_detection", source=f"DBNet-style text detector (MobileNetV3-like + FPN), {size}x{size}",
                outputs={"sigmoid_0": "text probability map"})
    lines = synth.text_lines(rng, 32 + n_calib + n_holdout, 32, 128)
    torch.manual_seed(SEED)
    crnn = recalibrate_bn(nets.CRNN(), bn_batches(lines[:32]))
    with torch.no_grad():                               # trained LSTMs use their gates' range
        for name, p in crnn.rnn.named_parameters():
            p.mul_(2.0 if name.startswith("weight") else 1.0)
    scale_output(crnn, crnn.fc, bn_batches(lines[:32]), 3.0)
    _ocr_folder(out, "ocr_rec_crnn", crnn, lines[32:], n_calib, "x", ["logits"],
                {"x": {0: "batch", 3: "w"}, "logits": {0: "batch", 1: "t"}},
                task="text_recognition", source="CRNN recognizer: conv stack + 2-layer BiLSTM + CTC logits, 32x128",
                outputs={"logits": "CTC logits [1, T, classes]"})
    crops = synth.text_lines(rng, 32 + n_calib + n_holdout, 48, 192)
    crops[1::2] = crops[1::2, :, ::-1, ::-1]            # half of them upside down (the classifier's job)
    torch.manual_seed(SEED)
    cls = torch.nn.Sequential(torchvision.models.mobilenet_v3_small(num_classes=2, width_mult=0.5),
                              torch.nn.Softmax(-1))
    cls = recalibrate_bn(cls, bn_batches(np.ascontiguousarray(crops[:32])))
    scale_output(cls, last_linear(cls), bn_batches(np.ascontiguousarray(crops[:32])), 3.0)
    _ocr_folder(out, "ocr_cls_mbv3", cls, np.ascontiguousarray(crops[32:]), n_calib, "x", ["softmax_0"],
                {"x": {0: "batch"}, "softmax_0": {0: "batch"}},
                task="text_direction", source="direction classifier: MobileNetV3-small x0.5 (hardswish, SE), 48x192",
                outputs={"softmax_0": "class probabilities (0/180 degrees)"})


def _ocr_folder(out, name, model, samples, n_calib, inp, outs, axes, *, task, source, outputs):
    folder = folder_for(out, name)
    calib, holdout = {inp: samples[:n_calib, None]}, {inp: samples[n_calib:, None]}
    opset = export(model, (torch.from_numpy(samples[:1]),), folder / "model.onnx", dynamo=False, inputs=[inp],
                   outputs=outs, opset=OCR_OPSET, dynamic_axes=axes)
    write_data(folder, calib, holdout)
    pins = {inp: [1, *samples.shape[1:]]} if set(axes[inp]) - {0} else {}   # dims beyond the batch
    write_meta(folder, task=task, source=source, exporter="torchscript", opset=opset, inputs=inputs_meta(calib),
               input_shapes=pins, outputs=outputs, primary_output=outs[0], dynamic="batch+spatial")


# --- streaming VAD: two LSTM branches in an If on the sample rate --------------------------------
def make_vad(out: Path, rng, n_calib: int, n_holdout: int) -> None:
    import vad
    folder = folder_for(out, "vad_silero_like")
    model = vad.build(folder / "model.onnx", synth.speech_audio(rng, 64 * 512), opset=16)
    calib = vad.record(model, synth.speech_audio(rng, n_calib * 512))
    holdout = vad.record(model, synth.speech_audio(rng, n_holdout * 512))
    write_data(folder, calib, holdout)
    write_meta(folder, task="vad", source="silero-like streaming VAD: If(sr == 16000) over two STFT+conv+LSTM branches",
               exporter="torchscript branches joined by an ONNX If", opset=16, inputs=inputs_meta(calib),
               outputs={"output": "speech probability [1, 1]", "stateN": "recurrent state (fed back)"},
               primary_output="output", calib_note="a recorded sequence: each sample's state is the previous output's")


# --- BERT-like text encoder -----------------------------------------------------------------------
def make_bert(out: Path, rng, n_calib: int, n_holdout: int) -> None:
    ids, mask = synth.token_ids(rng, n_calib + n_holdout, 64, 4000)
    torch.manual_seed(SEED)
    model = nets.TinyBert().eval()
    args = (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1]))
    calib = {"input_ids": ids[:n_calib, None], "attention_mask": mask[:n_calib, None]}
    holdout = {"input_ids": ids[n_calib:, None], "attention_mask": mask[n_calib:, None]}
    for tag, dynamo in (("ts", False), ("dynamo", True)):
        folder = folder_for(out, f"bert_tiny_{tag}")
        opset = export(model, args, folder / "model.onnx", dynamo=dynamo, inputs=["input_ids", "attention_mask"],
                       outputs=["last_hidden_state", "logits"])
        write_data(folder, calib, holdout)
        write_meta(folder, task="text_encoder", source="BERT-like encoder: 2 layers, d=128, 2 heads, seq 64",
                   exporter="dynamo" if dynamo else "torchscript", opset=opset, inputs=inputs_meta(calib),
                   outputs={"last_hidden_state": "token embeddings", "logits": "class logits"},
                   primary_output="last_hidden_state")


# --- the zoo --------------------------------------------------------------------------------------
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/work/zoo"))
    p.add_argument("--only", help="comma-separated groups: tv,<arch>,yolo,yolov5,ocr,vad,bert,quantized")
    p.add_argument("--calib", type=int, default=32, help="calibration samples per model")
    p.add_argument("--holdout", type=int, default=16, help="held-out samples per model")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    only = set(args.only.split(",")) if args.only else None
    want = lambda group: only is None or group in only                      # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    t0 = time.time()
    if any(want(a) for a in ["tv", *TV_ARCHS]):
        data = {"train": synth.natural_images(rng, 48, 224, 224),
                "calib": synth.natural_images(rng, args.calib, 224, 224),
                "holdout": synth.natural_images(rng, args.holdout, 224, 224)}
        for arch in TV_ARCHS:
            if want("tv") or want(arch):
                _step(arch, t0, make_torchvision, args.out, arch, data)
    for group, fn in (("yolo", make_yolo), ("yolov5", make_yolov5), ("ocr", make_ocr), ("vad", make_vad), ("bert", make_bert)):
        if want(group):
            _step(group, t0, fn, args.out, np.random.default_rng([SEED, len(group)]), args.calib, args.holdout)
    if want("quantized"):
        import prequant
        _step("quantized", t0, prequant.make_all, args.out)
    print(f"zoo written to {args.out} in {time.time() - t0:.0f} s")


def _step(label, t0, fn, *args) -> None:
    start = time.time()
    try:
        fn(*args)
        print(f"[{time.time() - t0:6.0f} s] {label}: {time.time() - start:.1f} s", flush=True)
    except Exception as exc:           # one model's export problem must not lose the rest of the zoo
        print(f"[{time.time() - t0:6.0f} s] {label}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
