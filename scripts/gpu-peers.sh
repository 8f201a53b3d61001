#!/usr/bin/env bash
# Runs on the GPU host, from a bundle made here with
#   scripts/gpu-bundle.sh --timing-only
#   mkdir -p .gpu/whl .gpu/peers && cp benches/peers/*.py .gpu/peers/ && cp assets/sample.mp4 .gpu/ \
#     && cp scripts/gpu-peers.sh .gpu/ \
#     && python3 -m pip download --no-deps ultralytics==8.4.190 ultralytics-thop -d .gpu/whl
# and on the GPU machine (device tool, carry [".gpu"]): bash .gpu/gpu-peers.sh
# The ORT step needs ONNX Runtime >= 1.31 (the host's Python wheel is 1.30): put our fetched
# library, xz-compressed, at .gpu/lib/libonnxruntime.so.xz and point ORT_DYLIB_PATH at it unpacked.
# Call 2 on the GPU host: the timing model through the harness (tract-cuda, GPU letterbox, ORT CPU),
# the memory table, and the peers (PyTorch eager/graph, ORT CPU 16 threads, Ultralytics predict,
# the 8-thread Python pool) in the same call.
set -u
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/local/cuda-13.0/targets/x86_64-linux/lib
export ORT_DYLIB_PATH=$(ls /opt/torch/.venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.* | head -1)
OUT=${OUT:-$B/out}; mkdir -p "$OUT/json"
exec > >(tee -a "$OUT/gpu-run2.log") 2>&1
step() { echo; echo "=== $* ($(date +%T), ${SECONDS}s)"; }
for f in "$B"/bin/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"; chmod +x "${f%.xz}"; done
G=$B/bin/gpu; N=$B/models/yolov8n-random-640.onnx; V=$B/sample.mp4
step machine; nvidia-smi --query-gpu=name,driver_version --format=csv; nproc; python3 -c 'import onnxruntime, torch, cv2; print(onnxruntime.__version__, torch.__version__, cv2.__version__)'
step warm; timeout 200 "$G" warm --json "$OUT/json/warm.json"
step "bench yolov8n tract-cuda CPU letterbox"; timeout 150 "$G" bench --model "$N" --replicas 1,2,4,8 --frames 600 --json "$OUT/json/bench-n.json"
step "bench yolov8n tract-cuda GPU letterbox"; timeout 100 "$G" bench --model "$N" --replicas 1,2,4,8 --frames 600 --gpu-pre --modes serial,pipelined,pool --json "$OUT/json/bench-n-gpupre.json"
step "mem yolov8n"; timeout 120 "$G" mem --model "$N" --replicas 1,2,4,8 --json "$OUT/json/mem-n.json"
step "bench yolov8n ORT CPU, 1-thread sessions"; timeout 120 "$G" bench --model "$N" --engine ort --threads 1 --replicas 1,8,14 --frames 300 --json "$OUT/json/bench-n-ort.json"
pip_t=/tmp/ul; python3 -m pip install -q --no-deps --no-index --target $pip_t "$B"/whl/*.whl 2>&1 | tail -2
export PYTHONPATH=$pip_t YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/ycfg
step "peer: PyTorch yolov8n"; timeout 120 python3 "$B/peers/torch_yolo.py" --cfg yolov8n.yaml --nc 80 --json "$OUT/json/torch-n.json"
step "peer: PyTorch yolov8s nc=2 (person detector's architecture)"; timeout 120 python3 "$B/peers/torch_yolo.py" --cfg yolov8s.yaml --nc 2 --json "$OUT/json/torch-s.json"
step "peer: ORT CPU 16 threads"; timeout 60 python3 "$B/peers/ort_cpu.py" "$N" --threads 16 --iters 200 --json "$OUT/json/ortcpu16-n.json"
step "peer: Ultralytics predict on the sample video"; timeout 100 python3 "$B/peers/ultralytics_predict.py" "$V" "$N" --frames 300 --json "$OUT/json/ultra-n.json"
step "peer: python pool 8 threads"; timeout 60 python3 "$B/peers/ort_pool.py" "$V" "$N" --workers 8 --frames 300 --json "$OUT/json/pool8-n.json"
step "peer: python pool 16 threads"; timeout 60 python3 "$B/peers/ort_pool.py" "$V" "$N" --workers 16 --frames 300 --json "$OUT/json/pool16-n.json"
step collect
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]; d = os.path.join(out, "json"); res = {}
for f in sorted(os.listdir(d)):
    try: res[f[:-5]] = json.load(open(os.path.join(d, f)))
    except Exception as e: res[f[:-5]] = str(e)
json.dump(res, open(os.path.join(out, "results2.json"), "w"), indent=1)
PY
rm -rf "$OUT/json"; echo "done in ${SECONDS}s"
