"""Task metrics of the zoo bench (bench/zoo_bench.py): what a user of each model sees, decoded the
way the package that ships the model decodes it, in numpy only (no OpenCV, no SciPy).

meta.json's `metric` names the decoder; `score(meta, folder, refs, cands, labels)` returns the
figures for one candidate (ours int8, ORT int8) against the float model's outputs on the holdout
and against the ground truth the zoo recorded (bench/zoo/third_party.py):

    ctc_text    CTC greedy decode (argmax per step, merge repeats, drop blank: 0 or metric `blank`) with the charset
                of the model's metadata `character` (PP-OCR: blank first, space last) or the
                folder's charset.json (ddddocr); CER vs the rendered text, exact match vs float,
                and per-step agreement of the best class with float (a finer figure)
    classify    top-1 agreement with float; accuracy vs the labels
    db_boxes    DB text detector: probability map > thresh, connected components (8-neighbour),
                each component's box kept when its mean probability >= box_thresh; F1 at IoU 0.5
                vs float's boxes (and vs the rendered line boxes)
    yolov8      [1, 4+classes, anchors]: centre/size boxes, best class >= conf, class-agnostic NMS
    yolox       [1, anchors, 5+classes]: grid + stride decode, objectness x class >= conf, NMS
    picodet     4 score maps + 4 distribution maps (DFL, reg_max 7): centre +- distances, per-class
                NMS (rapid-layout's PPPostProcess); detectors' F1 at IoU 0.5 vs float, same class
    vad_stream  speech decisions (probability >= threshold) of a closed-loop stream (the model's own
                state fed back, zeros at each clip start): accuracy vs float and vs the speech labels
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx


# --- text ---------------------------------------------------------------------------------------
def ctc_greedy(probs: np.ndarray, blank: int = 0) -> list[int]:
    """Best path of a [T, C] score matrix: argmax per step, repeats merged, blanks dropped."""
    best = np.argmax(probs, axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep] if i != blank]


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (one row at a time)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate: total edits over total reference characters."""
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


def charset(meta: dict, folder: Path) -> list[str]:
    source = meta["metric"]["charset"]
    if source.startswith("model:"):        # PaddleOCR's convention: blank first, space appended
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        chars = next(p.value for p in model.metadata_props if p.key == source[6:]).split("\n")
        return ["<blank>", *chars, " "]
    return json.loads((folder / source).read_text())


def text_of(output: np.ndarray, layout: str, chars: list[str], blank: int = 0) -> str:
    steps = output[:, 0] if layout == "TNC" else output[0]
    return "".join(chars[i] if i < len(chars) else "?" for i in ctc_greedy(steps, blank))


def step_agreement(refs: list[np.ndarray], cands: list[np.ndarray], layout: str) -> float:
    """Share of time steps whose best class matches float's: 40 steps a line, so on 50 lines a
    figure 40 times finer than exact-text agreement, where one int8 change that flips 3 borderline
    lines moves 6 points (PP-OCRv4's recognizer: 0.80 vs 0.86 for two candidates whose steps
    agreed 0.9735 vs 0.9740)."""
    axis = 1 if layout == "TNC" else 0
    best = lambda o: np.argmax(np.take(o, 0, axis=axis), axis=-1)      # noqa: E731
    return float(np.mean(np.concatenate([best(r) == best(c) for r, c in zip(refs, cands)])))


# --- boxes --------------------------------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a [N, 4] with every box of b [M, 4] (x0, y0, x1, y1)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)      # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, highest score first."""
    order, keep = list(np.argsort(-np.asarray(scores), kind="stable")), []
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if order:
            overlaps = iou_matrix(boxes[[i]], boxes[order])[0]
            order = [j for j, o in zip(order, overlaps) if o <= iou]
    return keep


def match(pred: np.ndarray, ref: np.ndarray, iou: float = 0.5, pred_cls=None, ref_cls=None) -> tuple[int, int, int]:
    """Greedy one-to-one matching (highest IoU first, same class when given): (tp, fp, fn)."""
    m = iou_matrix(pred, ref)
    if pred_cls is not None and ref_cls is not None and m.size:
        m = np.where(np.asarray(pred_cls)[:, None] == np.asarray(ref_cls)[None, :], m, 0.0)
    tp = 0
    while m.size and m.max() >= iou:
        i, j = np.unravel_index(np.argmax(m), m.shape)
        m[i, :], m[:, j] = -1, -1
        tp += 1
    return tp, m.shape[0] - tp, m.shape[1] - tp


def f1(counts: list[tuple[int, int, int]]) -> float | None:
    """F1 over pooled (tp, fp, fn); None when neither side has any box (nothing to compare)."""
    tp, fp, fn = (sum(c[k] for c in counts) for k in range(3))
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def component_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int, list]]:
    """8-connected components of a 2-D bool mask from its row runs (union-find over runs):
    [(x0, y0, x1, y1, runs)], x1/y1 exclusive, runs as (row, start, stop)."""
    runs, parent, prev = [], [], []
    for y, row in enumerate(mask):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        cur = []
        for s, e in zip(edges[::2], edges[1::2]):
            k = len(runs)
            runs.append((y, int(s), int(e)))
            parent.append(k)
            for p in prev:             # 8-neighbour: runs of the row above that touch [s-1, e]
                if runs[p][1] <= e and runs[p][2] >= s:
                    _union(parent, p, k)
            cur.append(k)
        prev = cur
    groups: dict[int, list] = {}
    for k, run in enumerate(runs):
        groups.setdefault(_find(parent, k), []).append(run)
    return [(min(r[1] for r in g), min(r[0] for r in g), max(r[2] for r in g), max(r[0] for r in g) + 1, g)
            for g in groups.values()]


def _find(parent: list[int], k: int) -> int:
    while parent[k] != k:
        parent[k] = parent[parent[k]]
        k = parent[k]
    return k


def _union(parent: list[int], a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    parent[max(ra, rb)] = min(ra, rb)


def db_boxes(prob: np.ndarray, thresh: float, box_thresh: float, unclip: float = 0.0, min_side: int = 3) -> np.ndarray:
    """DBNet's post-processing on axis-aligned boxes: the network predicts shrunk text kernels;
    each kept box grows by area * unclip / perimeter on every side (DB's polygon offset, for a
    rectangle), as rapidocr's DBPostProcess does with unclip_ratio 1.6."""
    prob = prob.reshape(prob.shape[-2:])
    out = []
    for x0, y0, x1, y1, runs in component_boxes(prob > thresh):
        if min(x1 - x0, y1 - y0) < min_side:
            continue
        if np.mean(np.concatenate([prob[r, s:e] for r, s, e in runs])) >= box_thresh:
            d = (x1 - x0) * (y1 - y0) * unclip / (2 * (x1 - x0 + y1 - y0))
            out.append((x0 - d, y0 - d, x1 + d, y1 + d))
    return np.array(out, float).reshape(-1, 4)


# --- detector decoders: (boxes [N, 4] x0y0x1y1, scores [N], classes [N]) ---------------------------
def _xywh(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], axis=1)


def _agnostic(boxes, scores, classes, iou):
    keep = nms(boxes, scores, iou)
    return boxes[keep], scores[keep], classes[keep]


def decode_yolov8(out: np.ndarray, conf: float, iou: float):
    pred = out[0].T                                       # [anchors, 4 + classes]
    cls, score = pred[:, 4:].argmax(1), pred[:, 4:].max(1)
    sel = score >= conf
    return _agnostic(_xywh(pred[sel, :4]), score[sel], cls[sel], iou)


def decode_yolox(out: np.ndarray, size: int, conf: float, iou: float, strides=(8, 16, 32)):
    pred = out[0].astype(float).copy()
    grids = [np.stack(np.meshgrid(np.arange(size // s), np.arange(size // s)), 2).reshape(-1, 2) for s in strides]
    stride = np.concatenate([np.full(len(g), s) for g, s in zip(grids, strides)])[:, None]
    pred[:, :2] = (pred[:, :2] + np.concatenate(grids)) * stride
    pred[:, 2:4] = np.exp(np.minimum(pred[:, 2:4], 20)) * stride
    scores = pred[:, 4:5] * pred[:, 5:]
    cls, score = scores.argmax(1), scores.max(1)
    sel = score > conf
    return _agnostic(_xywh(pred[sel, :4]), score[sel], cls[sel], iou)


def decode_picodet(outs: list[np.ndarray], size, strides, conf: float, iou: float, top_k: int = 1000):
    """rapid-layout's PicoDet decode: outs = 4 score maps then 4 box-distribution maps."""
    half = len(outs) // 2
    boxes, scores = [], []
    for stride, score, dist in zip(strides, outs[:half], outs[half:]):
        score, dist = score[0], dist[0]
        reg = dist.shape[-1] // 4
        hh, ww = np.meshgrid(np.arange(int(np.ceil(size[0] / stride))), np.arange(int(np.ceil(size[1] / stride))),
                             indexing="ij")
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        d = dist.reshape(-1, reg).astype(float)
        d = np.exp(d - d.max(1, keepdims=True))
        d = ((d / d.sum(1, keepdims=True)) @ np.arange(reg)).reshape(-1, 4) * stride
        top = np.argsort(-score.max(1))[:top_k]
        boxes.append(np.stack([cx, cy, cx, cy], 1)[top] + np.array([-1, -1, 1, 1]) * d[top])
        scores.append(score[top])
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    out_b, out_s, out_c = [], [], []
    for c in range(scores.shape[1]):
        sel = scores[:, c] > conf
        keep = nms(boxes[sel], scores[sel, c], iou)[:100]
        out_b.append(boxes[sel][keep])
        out_s.append(scores[sel, c][keep])
        out_c.append(np.full(len(keep), c))
    return np.concatenate(out_b).reshape(-1, 4), np.concatenate(out_s), np.concatenate(out_c)


def detections(metric: dict, outputs: dict[str, np.ndarray], names: list[str]):
    kind = metric["kind"]
    if kind == "yolov8":
        return decode_yolov8(outputs[metric["output"]], metric["conf"], metric["iou"])
    if kind == "yolox":
        return decode_yolox(outputs[metric["output"]], metric["size"], metric["conf"], metric["iou"])
    if kind == "picodet":
        return decode_picodet([outputs[n] for n in names], metric["size"], metric["strides"], metric["conf"],
                              metric["iou"])
    boxes = db_boxes(outputs[metric["output"]], metric["thresh"], metric["box_thresh"], metric.get("unclip_ratio", 0.0))
    return boxes, np.ones(len(boxes)), np.zeros(len(boxes), int)


# --- one candidate ------------------------------------------------------------------------------
def score(meta: dict, folder: Path, refs: list[dict], cands: list[dict], labels: dict, names: list[str]) -> dict:
    """The task figures of one candidate's holdout outputs (cands) against float's (refs).
    names: the model's output names in graph order (PicoDet's maps are positional)."""
    metric = meta["metric"]
    kind = metric["kind"]
    if kind == "ctc_text":
        chars = charset(meta, folder)
        blank = metric.get("blank", 0)         # captcha-whisperer puts the CTC blank last
        ref_t = [text_of(r[metric["output"]], metric["layout"], chars, blank) for r in refs]
        got_t = [text_of(c[metric["output"]], metric["layout"], chars, blank) for c in cands]
        out = {"exact_vs_float": float(np.mean([a == b for a, b in zip(ref_t, got_t)])),
               "cer_vs_float": cer(ref_t, got_t),
               "steps_vs_float": step_agreement([r[metric["output"]] for r in refs],
                                                [c[metric["output"]] for c in cands], metric["layout"])}
        if "texts" in labels:
            out["cer"] = cer(labels["texts"], got_t)
        return out
    if kind == "classify":
        ref_c = [int(np.argmax(r[metric["output"]])) for r in refs]
        got_c = [int(np.argmax(c[metric["output"]])) for c in cands]
        out = {"agree_vs_float": float(np.mean([a == b for a, b in zip(ref_c, got_c)]))}
        if "classes" in labels:
            out["accuracy"] = float(np.mean([a == b for a, b in zip(labels["classes"], got_c)]))
        return out
    if kind == "tokens":
        return token_scores(metric, refs, cands, labels)
    if kind == "frame_speech":
        return frame_speech_scores(metric, refs, cands, labels)
    return _box_scores(metric, refs, cands, labels, names)


def token_scores(metric: dict, refs, cands, labels: dict) -> dict:
    """Per-position argmax agreement of a tagger ([1, T, tags]); only the first labels['lengths'][i]
    positions of sample i when the inputs were padded."""
    lengths = labels.get("lengths")
    agree = []
    for i, (r, c) in enumerate(zip(refs, cands)):
        a, b = np.argmax(r[metric["output"]], -1).ravel(), np.argmax(c[metric["output"]], -1).ravel()
        n = lengths[i] if lengths else len(a)
        agree.append(a[:n] == b[:n])
    return {"agree_vs_float": float(np.mean(np.concatenate(agree)))}


def frame_speech_scores(metric: dict, refs, cands, labels: dict) -> dict:
    """A frame-level VAD's speech decisions (1 - p[silence] >= threshold) against float's and the
    truth (labels['speech_frames'])."""
    def decisions(outs):
        return np.concatenate([1 - o[metric["output"]][0, :, metric["silence"]] >= metric["threshold"] for o in outs])
    ref, got = decisions(refs), decisions(cands)
    out = {"agree_vs_float": float(np.mean(ref == got)), "speech_frac": float(got.mean())}
    if "speech_frames" in labels:
        out["accuracy"] = float(np.mean(np.concatenate(labels["speech_frames"]).astype(bool) == got))
    return out


def _box_scores(metric: dict, refs, cands, labels: dict, names: list[str]) -> dict:
    vs_float, vs_truth, count = [], [], 0
    class_aware = metric["kind"] in ("yolov8", "yolox", "picodet")
    truths = labels.get("boxes") or [[b for _, b in page] for page in labels.get("blocks", [])] or None
    for i, (r, c) in enumerate(zip(refs, cands)):
        rb, _, rc = detections(metric, r, names)
        cb, _, cc = detections(metric, c, names)
        count += len(cb)
        vs_float.append(match(cb, rb, 0.5, cc if class_aware else None, rc if class_aware else None))
        if truths is not None:
            vs_truth.append(match(cb, np.array(truths[i], float).reshape(-1, 4)))
    out = {"f1_vs_float": f1(vs_float), "boxes": count}
    if truths is not None:
        out["f1_vs_truth"] = f1(vs_truth)
    return out


def vad_scores(ref_probs: list[float], cand_probs: list[float], labels: dict, threshold: float) -> dict:
    ref = np.asarray(ref_probs) >= threshold
    got = np.asarray(cand_probs) >= threshold
    out = {"agree_vs_float": float(np.mean(ref == got)), "speech_frac": float(got.mean())}
    if "speech" in labels:
        out["accuracy"] = float(np.mean(np.asarray(labels["speech"], bool) == got))
    return out
