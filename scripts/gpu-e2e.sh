#!/usr/bin/env bash
# Issue 7 on the GPU host: device-resident frames and one CUDA graph per replica, measured beside
# PyTorch in the same call. Runs from a bundle made here with
#   scripts/gpu-e2e.sh --bundle DIR MODEL [TORCH_CFG TORCH_NC]
# and on the GPU machine (device tool, carry ["DIR"]): bash DIR/gpu-e2e.sh
# What it runs: warm-up (NVRTC kernels), `gpu e2e` (correctness against tract's CPU engine, serial
# e2e per stage, graph replay, per-op-class GPU time, the 1080p letterbox kernel, pipelined 1/2/4/8
# replicas), the same check with strict f32 (NVIDIA_TF32_OVERRIDE=0), `gpu bench` with and without
# graphs (host tensors), and the PyTorch peer (eager, graph, e2e from a 1080p host frame).
set -u
if [ "${1:-}" = "--bundle" ]; then
  set -e
  dir=$2; model=$3; cfg=${4:-yolov8n.yaml}; nc=${5:-80}
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  target=${CARGO_TARGET_DIR:-$HOME/.cache/fp-target-cuda}
  rm -rf "$repo/$dir"; mkdir -p "$repo/$dir/bin" "$repo/$dir/models" "$repo/$dir/peers" "$repo/$dir/whl"
  strip --strip-all -o "$repo/$dir/bin/gpu" "$target/release/examples/gpu"; xz -9e -T0 "$repo/$dir/bin/gpu"
  cp "$model" "$repo/$dir/models/"
  cp "$repo/benches/peers/torch_yolo.py" "$repo/$dir/peers/"
  cp /tmp/whl/*.whl "$repo/$dir/whl/" 2>/dev/null || python3 -m pip download --no-deps ultralytics==8.4.190 ultralytics-thop -d "$repo/$dir/whl"
  cp "$repo/scripts/gpu-e2e.sh" "$repo/$dir/"
  printf '%s\n%s\n' "$cfg" "$nc" > "$repo/$dir/peer.txt"
  du -sh "$repo/$dir"; exit 0
fi
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/local/cuda-13.0/targets/x86_64-linux/lib
OUT=${OUT:-$B/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/e2e.log") 2>&1
step() { echo; echo "=== $* ($(date +%T), ${SECONDS}s)"; }
for f in "$B"/bin/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"; chmod +x "${f%.xz}"; done
G=$B/bin/gpu; M=$(ls "$B"/models/*.onnx | head -1); CFG=$(sed -n 1p "$B/peer.txt"); NC=$(sed -n 2p "$B/peer.txt")
step machine; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; nproc; date -u
step warm; timeout 200 "$G" warm
step "e2e $(basename "$M")"; timeout 200 "$G" e2e --model "$M" --frames 1000 --replicas 1,2,4,8 --json "$OUT/e2e.json"
step "strict f32 check"; NVIDIA_TF32_OVERRIDE=0 timeout 60 "$G" e2e --model "$M" --frames 50 --replicas 1 --profile-runs 2 --json "$OUT/e2e-strict.json" | grep -E '^check'
step "bench host tensors, graph"; timeout 60 "$G" bench --model "$M" --replicas 1,8 --frames 400 --modes serial,pipelined --json "$OUT/bench-graph.json"
step "bench host tensors, no graph"; timeout 60 "$G" bench --model "$M" --replicas 1,8 --frames 400 --modes serial,pipelined --no-cuda-graph --json "$OUT/bench-plain.json"
pip_t=/tmp/ul; python3 -m pip install -q --no-deps --no-index --target $pip_t "$B"/whl/*.whl 2>&1 | tail -2
export PYTHONPATH=$pip_t YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/ycfg
step "peer: PyTorch $CFG nc=$NC"; timeout 120 python3 "$B/peers/torch_yolo.py" --cfg "$CFG" --nc "$NC" --json "$OUT/torch.json"
echo "done in ${SECONDS}s"
