#!/usr/bin/env bash
# Screenshot of the camera view (docs/camera-view.png): `framepipe camera --serve` on the sample
# video played like a camera, headless Chromium on the page once a frame is served.
#   scripts/camera-screenshot.sh [OUT.png]
# FRAMEPIPE_BIN overrides the binary (default: a release build in $CARGO_TARGET_DIR or target/).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=${1:-docs/camera-view.png}
bin=${FRAMEPIPE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/framepipe}
[ -n "${FRAMEPIPE_BIN:-}" ] || cargo build --release -q -p framepipe-cli
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "camera-screenshot: chromium is missing (scripts/apt-install.sh chromium)" >&2; exit 2; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" camera --source assets/sample.mp4 --realtime --duration 60 --serve "127.0.0.1:$port" --quiet >/dev/null 2>&1 &
cam=$!
trap 'kill $cam 2>/dev/null || true; wait $cam 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/frame.jpg" && break
  sleep 0.2
done
sleep 4  # a few results, so that the page's rates are filled in
profile=$(mktemp -d)
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size=1280,900 --virtual-time-budget=5000 --screenshot="$out" "http://127.0.0.1:$port/" 2>/dev/null
rm -rf "$profile"
echo "screenshot: $out"
