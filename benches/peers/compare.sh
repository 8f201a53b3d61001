#!/usr/bin/env bash
# framepipe bench (serial, pipelined, pool) against the peers users would pick instead, on the same
# model, video and machine, in one run:
#   - Ultralytics' predictor, YOLO(model.onnx).predict(video, stream=True) (ONNX Runtime CPU);
#   - the seeds' Python pattern: N threads, each with its own 1-thread ONNX Runtime session, unordered.
#
#   benches/peers/compare.sh VIDEO MODEL OUTDIR [framepipe bench args...]
#
# Env: FRAMEPIPE (the binary; default: the release build), PYTHON (a python3 with onnxruntime,
# opencv-python-headless, numpy and ultralytics), WORKERS (the peers' and framepipe's parallelism;
# default: the number of cores), FRAMES (default: all).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
video=$1 model=$2 out=$3; shift 3
mkdir -p "$out"
framepipe=${FRAMEPIPE:-${CARGO_TARGET_DIR:-$HOME/.cache/framepipe/target}/release/framepipe}
python=${PYTHON:-python3}
workers=${WORKERS:-$(nproc)}
frames_flag=(); py_frames=()
if [ -n "${FRAMES:-}" ]; then frames_flag=(--frames "$FRAMES"); py_frames=(--frames "$FRAMES"); fi

echo "== framepipe bench ($workers infer replicas / pool workers)" >&2
"$framepipe" bench "$video" --model "$model" --mode all --replicas "infer=$workers" "${frames_flag[@]}" \
  --json "$out/framepipe.json" "$@" | tee "$out/framepipe.txt"
echo "== ultralytics predict" >&2
"$python" "$here/ultralytics_predict.py" "$video" "$model" "${py_frames[@]}" --json "$out/ultralytics.json" >/dev/null
echo "== python pool ($workers threads, 1-thread ORT sessions)" >&2
"$python" "$here/ort_pool.py" "$video" "$model" --workers "$workers" "${py_frames[@]}" --json "$out/ort_pool.json" >/dev/null
"$python" "$here/summarize.py" "$out"
