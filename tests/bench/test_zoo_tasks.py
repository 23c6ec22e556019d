"""The task metrics of the zoo bench (bench/zoo_tasks.py): CTC decoding, edit distance, box IoU,
NMS, matching and F1, connected components, and the detector decoders on hand-made outputs whose
right answer is known."""
import json

import numpy as np
import pytest

from bench import zoo_tasks as zt


def _onehot(indices, classes=5):
    out = np.full((len(indices), classes), 0.01)
    out[np.arange(len(indices)), indices] = 0.9
    return out


@pytest.mark.parametrize("path, want", [
    ([0, 1, 1, 0, 1, 2, 2, 0], [1, 1, 2]),        # a blank between repeats keeps both
    ([3, 3, 3], [3]),
    ([0, 0], []),
    ([2, 0, 0, 2, 4], [2, 2, 4]),
])
def test_ctc_greedy_merges_repeats_and_drops_blanks(path, want):
    assert zt.ctc_greedy(_onehot(path)) == want


@pytest.mark.parametrize("a, b, dist", [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0), ("ab", "ba", 2)])
def test_edit_distance(a, b, dist):
    assert zt.edit_distance(a, b) == dist


def test_cer_pools_edits_over_reference_characters():
    assert zt.cer(["abcd", "xy"], ["abed", "xy"]) == pytest.approx(1 / 6)
    assert zt.cer(["ab"], [""]) == 1.0


def test_text_of_reads_both_layouts(tmp_path):
    chars = ["", "a", "b", "c"]
    ntc = _onehot([1, 0, 2, 2, 3], 4)[None]           # [1, T, C]
    assert zt.text_of(ntc, "NTC", chars) == "abc"
    assert zt.text_of(ntc.transpose(1, 0, 2), "TNC", chars) == "abc"
    (tmp_path / "charset.json").write_text(json.dumps(chars))
    assert zt.charset({"metric": {"charset": "charset.json"}}, tmp_path) == chars


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_step_agreement_counts_time_steps_not_lines(layout):
    """One changed step of ten in one line of two: exact-text agreement drops to 1/2, the step
    figure to 19/20."""
    ref = [_onehot([1, 0, 2, 2, 3, 0, 1, 1, 0, 3], 4)[None] for _ in range(2)]
    cand = [ref[0], _onehot([1, 0, 2, 3, 3, 0, 1, 1, 0, 3], 4)[None]]
    if layout == "TNC":
        ref, cand = [r.transpose(1, 0, 2) for r in ref], [c.transpose(1, 0, 2) for c in cand]
    assert zt.step_agreement(ref, cand, layout) == pytest.approx(19 / 20)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(zt.iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])
    assert zt.iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.6, 0.9, 0.5, 0.7])
    assert zt.nms(boxes, scores, 0.5) == [1, 2]
    assert zt.nms(boxes, scores, 0.95) == [1, 3, 0, 2]      # a high IoU threshold suppresses nothing here


def test_match_is_one_to_one_and_respects_classes():
    ref = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    pred = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 0, 30, 10]])
    assert zt.match(pred, ref) == (2, 1, 0)                 # the duplicate is a false positive
    assert zt.match(pred, ref, 0.5, [0, 0, 1], [0, 0]) == (1, 2, 1)
    assert zt.match(np.zeros((0, 4)), ref) == (0, 0, 2)
    assert zt.f1([(2, 1, 0), (0, 0, 1)]) == pytest.approx(4 / 6)
    assert zt.f1([(0, 0, 0)]) is None


def test_component_boxes_joins_diagonal_neighbours_and_u_shapes():
    mask = np.zeros((8, 10), bool)
    mask[1, 1] = mask[2, 2] = True                          # diagonal: one component
    mask[4:7, 5] = mask[4:7, 8] = mask[6, 5:9] = True       # a U: two runs joined only below
    boxes = sorted(b[:4] for b in zt.component_boxes(mask))
    assert boxes == [(1, 1, 3, 3), (5, 4, 9, 7)]


def test_db_boxes_keeps_confident_components_of_a_minimum_size():
    prob = np.zeros((1, 1, 20, 30), np.float32)
    prob[0, 0, 2:8, 3:20] = 0.9                             # a confident line
    prob[0, 0, 12:17, 2:12] = 0.35                          # above thresh, below box_thresh
    prob[0, 0, 18, 20:28] = 0.9                             # one pixel high: too thin
    np.testing.assert_array_equal(zt.db_boxes(prob, 0.3, 0.5), [[3, 2, 20, 8]])
    d = 17 * 6 * 1.5 / (2 * (17 + 6))                      # unclip: area * ratio / perimeter
    np.testing.assert_allclose(zt.db_boxes(prob, 0.3, 0.5, 1.5), [[3 - d, 2 - d, 20 + d, 8 + d]])


def test_decode_yolov8_thresholds_and_suppresses():
    out = np.zeros((1, 4 + 2, 3), np.float32)
    out[0, :4, 0] = [50, 50, 20, 20]
    out[0, :4, 1] = [51, 50, 20, 20]                        # a duplicate of anchor 0, lower score
    out[0, :4, 2] = [10, 10, 4, 4]
    out[0, 4:, :] = [[0.9, 0.6, 0.1], [0.05, 0.1, 0.15]]
    boxes, scores, classes = zt.decode_yolov8(out, 0.2, 0.45)
    np.testing.assert_allclose(boxes, [[40, 40, 60, 60]])
    assert scores.tolist() == pytest.approx([0.9]) and classes.tolist() == [0]


def test_decode_yolox_uses_grid_and_stride():
    size, strides = 32, (8, 16, 32)
    anchors = sum((size // s) ** 2 for s in strides)      # 16 + 4 + 1
    out = np.zeros((1, anchors, 5 + 1), np.float32)
    out[0, 5] = [0.5, 0.5, 0, 0, 0.9, 1.0]               # cell (x=1, y=1) of stride 8: centre (12, 12), size 8
    boxes, scores, _ = zt.decode_yolox(out, size, 0.1, 0.45, strides)
    np.testing.assert_allclose(boxes, [[8, 8, 16, 16]])
    assert scores.tolist() == pytest.approx([0.9])


def test_decode_picodet_centres_plus_distribution_distances():
    size, strides, reg = (16, 16), [8, 16], 8
    scores = [np.zeros((1, 4, 2), np.float32), np.zeros((1, 1, 2), np.float32)]
    dists = [np.full((1, 4, 4 * reg), -20.0, np.float32), np.full((1, 1, 4 * reg), -20.0, np.float32)]
    scores[0][0, 3, 1] = 0.8                              # cell (1, 1) of stride 8: centre (12, 12), class 1
    dists[0][0, 3].reshape(4, reg)[:, 1] = 20.0          # every side at 1 bin = 8 px
    boxes, sc, classes = zt.decode_picodet(scores + dists, size, strides, 0.5, 0.5)
    np.testing.assert_allclose(boxes, [[4, 4, 20, 20]], atol=1e-6)
    assert classes.tolist() == [1] and sc.tolist() == pytest.approx([0.8])


def test_box_scores_compare_with_float_and_truth():
    metric = {"kind": "yolov8", "output": "o", "conf": 0.2, "iou": 0.45}
    ref = np.zeros((1, 5, 2), np.float32)
    ref[0, :, 0] = [50, 50, 20, 20, 0.9]
    cand = ref.copy()
    cand[0, :, 1] = [10, 10, 4, 4, 0.8]                  # one extra box
    labels = {"boxes": [[[40, 40, 60, 60]]]}
    got = zt.score({"metric": metric}, None, [{"o": ref}], [{"o": cand}], labels, ["o"])
    assert got == {"f1_vs_float": pytest.approx(2 / 3), "boxes": 2, "f1_vs_truth": pytest.approx(2 / 3)}


def test_vad_scores():
    got = zt.vad_scores([0.1, 0.9, 0.6, 0.2], [0.2, 0.8, 0.4, 0.1], {"speech": [0, 1, 1, 1]}, 0.5)
    assert got == {"agree_vs_float": 0.75, "speech_frac": 0.25, "accuracy": 0.5}


def test_token_scores_count_only_the_unpadded_positions():
    ref = [{"y": np.eye(3)[[0, 1, 2, 0]][None]}]            # argmax 0 1 2 0
    got = [{"y": np.eye(3)[[0, 2, 2, 1]][None]}]            # argmax 0 2 2 1
    meta = {"metric": {"kind": "tokens", "output": "y"}}
    assert zt.score(meta, None, ref, got, {}, ["y"])["agree_vs_float"] == pytest.approx(0.5)
    assert zt.score(meta, None, ref, got, {"lengths": [3]}, ["y"])["agree_vs_float"] == pytest.approx(2 / 3)


def test_frame_speech_scores_read_one_minus_silence():
    probs = lambda sil: {"logits": np.stack([sil, 1 - sil], -1)[None]}      # noqa: E731
    ref, got = [probs(np.array([0.9, 0.2, 0.1]))], [probs(np.array([0.9, 0.6, 0.1]))]
    meta = {"metric": {"kind": "frame_speech", "output": "logits", "silence": 0, "threshold": 0.5}}
    out = zt.score(meta, None, ref, got, {"speech_frames": [[0, 1, 1]]}, ["logits"])
    assert out["agree_vs_float"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(2 / 3) and out["speech_frac"] == pytest.approx(1 / 3)
