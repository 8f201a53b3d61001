#!/usr/bin/env bash
# Issue 8 on the GPU host: `--tune` for the device-resident pipeline against a grid of hand-set
# shapes (`gpu tune`: calibrate the stages and the GPU's scaling, plan with framepipe-tune at each
# latency slack, run the plans and the grid through the same pipeline). Bundle it here with
#   scripts/gpu-tune.sh --bundle DIR MODEL [MODEL ...]
# and run it on the GPU machine (device tool, carry ["DIR"]): OUT=$OUT bash DIR/gpu-tune.sh
set -u
if [ "${1:-}" = "--bundle" ]; then
  set -e
  dir=$2; shift 2
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  target=${CARGO_TARGET_DIR:-$HOME/.cache/fp-target-cuda}
  rm -rf "$repo/$dir"; mkdir -p "$repo/$dir/bin" "$repo/$dir/models"
  strip --strip-all -o "$repo/$dir/bin/gpu" "$target/release/examples/gpu"; xz -9e -T0 "$repo/$dir/bin/gpu"
  cp "$@" "$repo/$dir/models/"
  cp "$repo/scripts/gpu-tune.sh" "$repo/$dir/"
  du -sh "$repo/$dir"; exit 0
fi
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/local/cuda-13.0/targets/x86_64-linux/lib
OUT=${OUT:-$B/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/tune.log") 2>&1
step() { echo; echo "=== $* ($(date +%T), ${SECONDS}s)"; }
for f in "$B"/bin/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"; chmod +x "${f%.xz}"; done
G=$B/bin/gpu
step machine; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; nproc; date -u
step warm; timeout 200 "$G" warm
for M in "$B"/models/*.onnx; do
  name=$(basename "$M" .onnx)
  step "tune $name"; timeout 280 "$G" tune --model "$M" --frames ${FRAMES:-1500} --slack 0.1,1.0,3.0 --json "$OUT/$name-tune.json"
done
echo "done in ${SECONDS}s"
