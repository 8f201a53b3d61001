#!/usr/bin/env bash
# Camera speed vs pipeline speed, measured against a real streaming peer (docs/camera.md).
#
#   scripts/camera-proof.sh [SECONDS]          (default 65; needs ffmpeg and the sample video)
#
# 1. A separate ffmpeg process serves the sample video as a live 30 fps camera: `-re`, looped,
#    MJPEG in NUT over TCP (NUT carries every frame's timestamp, so the camera lag is measured).
# 2. `framepipe camera` reads it for SECONDS with --admission keep-latest, then (fresh peer) with
#    --admission block; the person detector (YOLOv8s, ONNX Runtime, 1 thread) runs far below 30 fps.
# 3. Both latency curves go into one plot, docs/camera-latency.png; the figures are printed.
# 4. A stream that dies: ffmpeg (MJPEG over HTTP) is killed mid-run; the demo must report it, drain,
#    and exit 3.
#
# Outputs: target/camera-proof/{keep-latest,block,died}.{json,log}, docs/camera-latency.png.
# FRAMEPIPE_BIN overrides the binary (default: a release build in $CARGO_TARGET_DIR or target/).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
secs=${1:-65}
out=target/camera-proof
mkdir -p "$out"
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${FRAMEPIPE_BIN:-$target/release/framepipe}
if [ -z "${FRAMEPIPE_BIN:-}" ]; then
  cargo build --release -q -p framepipe-cli
fi
sample=assets/sample.mp4
[ -f "$sample" ] || "$bin" sample-video
command -v ffmpeg >/dev/null || { echo "camera-proof: ffmpeg is missing (scripts/setup.sh installs it)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until something listens on (or, a one-client peer, already serves) 127.0.0.1:$1.
wait_serving() {
  local hex; hex=$(printf '0100007F:%04X' "$1")
  for _ in $(seq 200); do
    awk -v a="$hex" 'NR>1 && $2==a && ($4=="0A" || $4=="01") {f=1} END {exit !f}' /proc/net/tcp && return 0
    sleep 0.05
  done
  echo "camera-proof: the peer never listened on port $1" >&2; return 1
}
peer_pid=""
stop_peer() {
  if [ -n "$peer_pid" ]; then
    kill "$peer_pid" 2>/dev/null || true
    wait "$peer_pid" 2>/dev/null || true
  fi
  peer_pid=""
}
trap stop_peer EXIT
# A live 30 fps camera on tcp://127.0.0.1:$1: the sample video, looped, 1280x720 MJPEG in NUT.
start_nut_peer() {
  ffmpeg -hide_banner -loglevel fatal -nostdin -re -stream_loop -1 -i "$sample" -an \
    -c:v mjpeg -q:v 5 -f nut "tcp://127.0.0.1:$1?listen=1" &
  peer_pid=$!
  wait_serving "$1"
}

echo "machine: $(nproc) cores, $(uname -sr); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for adm in keep-latest block; do
  port=$(free_port)
  start_nut_peer "$port"
  echo "== $adm: framepipe camera --source tcp://127.0.0.1:$port --admission $adm --duration $secs --series"
  "$bin" camera --source "tcp://127.0.0.1:$port" --admission "$adm" --duration "$secs" --series \
    --json "$out/$adm.json" 2>&1 | tee "$out/$adm.log"
  stop_peer
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
done

"$bin" camera --plot-reports "keep-latest=$out/keep-latest.json,block=$out/block.json" --plot docs/camera-latency.png

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
for adm in ("keep-latest", "block"):
    r = json.load(open(f"{out}/{adm}.json"))
    full = [w for w in r["latency_windows"] if w["complete"]]
    cam = [w["camera_p99_us"] for w in full]
    cap = [w["p99_us"] for w in full]
    fmt = lambda v: "-" if v is None else f"{v/1e3:.0f}"
    print(f"{adm}: captured {r['captured']} = admitted {r['admitted']} + dropped {r['dropped']}; "
          f"processed {r['processed']} ({r['processed_fps']:.2f}/s), camera {r['camera_fps']:.1f} fps, "
          f"infer p50 {next(s for s in r['stages'] if s['name']=='infer')['service_us']['p50']/1e3:.0f} ms")
    print(f"  camera clock -> result p99 per {r['window_s']:.0f} s window (ms): {' '.join(fmt(v) for v in cam)}")
    print(f"  read -> result          p99 per {r['window_s']:.0f} s window (ms): {' '.join(fmt(v) for v in cap)}")
    if cam and cam[0] and cam[-1]:
        print(f"  last / first window p99 (camera clock): {cam[-1]/cam[0]:.2f}")
EOF

# A stream that dies mid-run: MJPEG over HTTP, killed after 8 s.
port=$(free_port)
ffmpeg -hide_banner -loglevel fatal -nostdin -re -stream_loop -1 -i "$sample" -an \
  -c:v mjpeg -q:v 5 -f mpjpeg -listen 1 "http://127.0.0.1:$port/" &
peer_pid=$!
wait_serving "$port"
( sleep 8; kill -9 "$peer_pid" 2>/dev/null ) &
echo "== died: framepipe camera --source http://127.0.0.1:$port/ (the peer is killed after 8 s)"
set +e
"$bin" camera --source "http://127.0.0.1:$port/" --json "$out/died.json" 2>&1 | tee "$out/died.log"
code=${PIPESTATUS[0]}
set -e
wait "$peer_pid" 2>/dev/null || true
peer_pid=""
echo "exit status: $code (3: the source died; frames in flight drained)"
[ "$code" -eq 3 ]
