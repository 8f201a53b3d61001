#!/usr/bin/env bash
# Builds the CUDA parts (release, feature `cuda`) and copies into .gpu/ (ignored by git) everything
# a GPU machine without Rust needs to prove them: the GPU harness (`gpu`, an example of
# framepipe-cuda with no OpenCV in it), the GPU test binaries, the models, and run.sh, which runs
# the tests, the memory table, the letterbox timing and the benches, with logs and JSON under $OUT.
#
#   scripts/gpu-bundle.sh [--timing-model | --timing-only] [--no-tests] [--with-framepipe]
#
# --timing-model adds ../shared/models/yolov8n-random-640.onnx (13 MB): with the person
# detector (45 MB) and the binaries (about 15 MB compressed) it goes over the 64 MiB a call can
# carry, so it is left out by default. --timing-only makes a second bundle: the harness and the
# timing model only (no tests, no person detector), for a second call.
#
# The lent GPU machine has the CUDA driver, cudart, NVRTC, cuBLAS and cuDNN, but no OpenCV: the
# `framepipe` binary (which links OpenCV for video I/O) cannot start there, so it is left out
# unless --with-framepipe is given; `gpu bench` runs the same stages on synthetic frames instead.
# Binaries are stripped and xz-compressed (run.sh unpacks them with python3's lzma). The bundle
# travels with the working tree (64 MiB in all): the person detector alone is 45 MB.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fp-target-cuda}
timing_model=0
timing_only=0
no_tests=0
with_framepipe=0
for a in "$@"; do
  case $a in
    --timing-model) timing_model=1 ;;
    --timing-only) timing_model=1; timing_only=1 ;;
    --no-tests) no_tests=1 ;;
    --with-framepipe) with_framepipe=1 ;;
    *) echo "gpu-bundle: unknown option $a" >&2; exit 2 ;;
  esac
done

echo "gpu-bundle: building (release, --features cuda) into $CARGO_TARGET_DIR" >&2
cargo build --release -p framepipe-cuda --example gpu
# The test binaries: their paths come from cargo's JSON messages.
tests_json=$(cargo test --release --no-run --message-format=json -p framepipe-infer --features cuda --test tract_cuda
  cargo test --release --no-run --message-format=json -p framepipe-cuda --test gpu_letterbox)
test_bin() {
  python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])
' "$1" <<<"$tests_json" | tail -1
}
tract_cuda=$(test_bin tract_cuda)
gpu_letterbox=$(test_bin gpu_letterbox)
[ -x "$tract_cuda" ] && [ -x "$gpu_letterbox" ] || { echo "gpu-bundle: test binaries not found" >&2; exit 1; }

rm -rf .gpu
mkdir -p .gpu/bin .gpu/models
pack() { # pack SRC NAME: strip and xz-compress a binary into .gpu/bin/NAME.xz
  strip --strip-all -o ".gpu/bin/$2" "$1"
  xz -9e -T0 ".gpu/bin/$2"
}
pack "$CARGO_TARGET_DIR/release/examples/gpu" gpu
if [ "$timing_only" = 0 ] && [ "$no_tests" = 0 ]; then
  pack "$tract_cuda" tract_cuda_tests
  pack "$gpu_letterbox" gpu_letterbox_tests
fi
if [ "$with_framepipe" = 1 ]; then
  cargo build --release -p framepipe-cli --features cuda
  pack "$CARGO_TARGET_DIR/release/framepipe" framepipe
  [ -f assets/sample.mp4 ] || "$CARGO_TARGET_DIR/release/framepipe" sample-video
  cp assets/sample.mp4 .gpu/
fi

[ "$timing_only" = 1 ] || cp assets/models/person-yolov8s.onnx .gpu/models/
if [ "$timing_model" = 1 ]; then
  cp "$repo/../shared/models/yolov8n-random-640.onnx" .gpu/models/
fi
# The ONNX Runtime library (29 MB) is left out: the GPU tests compare tract-cuda with tract on the
# CPU, which needs no library, and the bundle would not fit.

cat > .gpu/run.sh <<'EOF'
#!/usr/bin/env bash
# Runs on the GPU machine, from anywhere: the tests, the memory table, the letterbox timing and
# the benches, for whichever binaries and models the bundle holds. Everything goes to $OUT:
# gpu-run.log (all output) and results.json (every JSON result); at most 8 files come back.
#   SKIP="tests pre bench-person-yolov8s ..."  leaves steps out (names as in the want calls below);
#   FP_DIAG=1  adds a bench with a 4 MiB cuBLAS workspace (--small-cublas), to compare its speed
#              with the default's on the same machine.
set -u
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/local/cuda-13.0/targets/x86_64-linux/lib
export FRAMEPIPE_ASSETS=$B
# The host's CPU-only ONNX Runtime (from its Python wheel), for the CPU-engine figures.
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls /opt/torch/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | head -1)}
OUT=${OUT:-$B/out}
mkdir -p "$OUT" "$OUT/json"
LOG=$OUT/gpu-run.log
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "=== $* ($(date +%T), ${SECONDS}s)"; }
SKIP=" ${SKIP:-} "
want() { [[ "$SKIP" != *" $1 "* ]]; }
for f in "$B"/bin/*.xz; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"
  chmod +x "${f%.xz}"
done
G=$B/bin/gpu
LT=$B/bin/gpu_letterbox_tests
TT=$B/bin/tract_cuda_tests
P=$B/models/person-yolov8s.onnx
N=$B/models/yolov8n-random-640.onnx
step machine
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
echo "cores: $(nproc); OpenCV libraries: $(ldconfig -p | grep -c libopencv)"
step "warm the tract-cuda kernel cache (once per machine)"
timeout 200 "$G" warm --json "$OUT/json/warm.json"
timeout 30 "$G" info
if [ -x "$LT" ] && want tests; then
  step "GPU tests: letterbox vs CPU"
  timeout 120 "$LT" --include-ignored --test-threads=1 --nocapture
fi
if [ -x "$TT" ] && [ -f "$P" ] && want tests; then
  step "GPU tests: tract-cuda (TF32 allowed, cuDNN's default)"
  timeout 180 "$TT" --include-ignored --test-threads=1 --nocapture
fi
if want pre; then
  step "GPU letterbox vs CPU letterbox timing"
  timeout 90 "$G" pre --iters 200 --json "$OUT/json/pre.json"
fi
for m in "$P" "$N"; do
  [ -f "$m" ] || continue
  name=$(basename "$m" .onnx)
  if want "bench-$name"; then
    step "bench: $name, CPU letterbox"
    timeout 200 "$G" bench --model "$m" --replicas 1,2,4,8 --frames 600 --json "$OUT/json/bench-$name.json"
  fi
  if want "mem-$name"; then
    step "memory per replica: $name"
    timeout 200 "$G" mem --model "$m" --replicas 1,2,4,8 --json "$OUT/json/mem-$name.json"
  fi
  if want "mem-$name"; then
    step "memory per replica: $name, 4 MiB cuBLAS workspace (--small-cublas)"
    timeout 200 "$G" mem --model "$m" --replicas 1,2,4,8 --small-cublas --json "$OUT/json/mem-$name-small-cublas.json"
  fi
  if [ "${FP_DIAG:-0}" = 1 ]; then
    step "bench: $name, CPU letterbox, 4 MiB cuBLAS workspace (--small-cublas): same-machine A/B"
    timeout 200 "$G" bench --model "$m" --replicas 1,2,4,8 --frames 600 --modes serial,pipelined --small-cublas \
      --json "$OUT/json/bench-$name-small-cublas.json"
  fi
  if want "gpupre-$name"; then
    step "bench: $name, GPU letterbox"
    timeout 150 "$G" bench --model "$m" --replicas 1,2,4,8 --frames 600 --gpu-pre --modes pipelined,pool \
      --json "$OUT/json/bench-$name-gpupre.json"
  fi
  if want "ort-$name" && [ -n "$ORT_DYLIB_PATH" ]; then
    step "bench: $name, ONNX Runtime CPU ($ORT_DYLIB_PATH), 1-thread sessions"
    timeout 150 "$G" bench --model "$m" --engine ort --threads 1 --replicas 1,8,14 --frames 150 \
      --json "$OUT/json/bench-$name-ort.json"
  fi
done
if [ -x "$TT" ] && [ -f "$P" ] && want tests; then
  step "tract-cuda vs CPU with strict f32 (NVIDIA_TF32_OVERRIDE=0)"
  NVIDIA_TF32_OVERRIDE=0 timeout 120 "$TT" --ignored --exact tract_cuda_and_tract_cpu_agree_on_the_person_detector \
    --nocapture
fi
step "collect"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
d = os.path.join(out, "json")
res = {}
for f in sorted(os.listdir(d)):
    with open(os.path.join(d, f)) as fh:
        res[f[:-5]] = json.load(fh)
with open(os.path.join(out, "results.json"), "w") as fh:
    json.dump(res, fh, indent=1)
PY
rm -rf "$OUT/json"
echo "done in ${SECONDS}s"
EOF
chmod +x .gpu/run.sh
du -sh .gpu; du -ab .gpu | sort -n | tail -8
echo "gpu-bundle: ready. Device command (repo root): bash .gpu/run.sh   with carry: [\".gpu\"]" >&2
