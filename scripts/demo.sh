#!/usr/bin/env bash
# Quickstart demo: set everything up, then convert the shipped example model (a CNN trained on
# scikit-learn's digits) to a signed int8 artifact with its calibration data, verify it against the
# float model on the held-out digits, and print the report. Output goes to build/demo/ (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/demo}
mkdir -p "$OUT"
echo "== set-up (log: $OUT/setup.log)"
bash scripts/setup.sh >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; echo "set-up failed" >&2; exit 1; }
DIGITS=examples/digits
G=.venv/bin/ganglion
# A throw-away signing key for the demo (never overwrite one that exists).
[ -f "$OUT/demo.key" ] || "$G" keys generate -o "$OUT/demo.key"

echo "== convert: ONNX -> int8 TFLite artifact (.gpk), calibrated on 100 training digits"
"$G" convert "$DIGITS/digits_cnn.onnx" --calib "$DIGITS/calib.npz" --num-calib 100 \
    --holdout "$DIGITS/holdout.npz" --holdout-labels "$DIGITS/holdout_labels.npy" \
    --labels "$DIGITS/labels.txt" --signing-key "$OUT/demo.key" -o "$OUT/digits.gpk"

echo
echo "== verify: the artifact in LiteRT vs the float model in onnxruntime, on 450 held-out digits"
"$G" verify "$OUT/digits.gpk" --reference "$DIGITS/digits_cnn.onnx" --data "$DIGITS/holdout.npz" \
    --labels "$DIGITS/holdout_labels.npy" --trusted-key "$OUT/demo.key.pub" --per-layer

echo
echo "== inspect: what is inside the artifact"
"$G" inspect "$OUT/digits.gpk"
