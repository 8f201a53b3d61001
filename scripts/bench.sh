#!/usr/bin/env bash
# framepipe's main job (the README's): installs what is missing, builds, makes the sample video, and
# runs `framepipe bench --mode all` on it with the default engine and model. Extra arguments go to
# `framepipe bench` (e.g. --json bench.json --plot bench.png --trace trace.json).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

"$repo/scripts/setup.sh"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/framepipe/target}"

cargo build --locked --release -p framepipe-cli
framepipe="$CARGO_TARGET_DIR/release/framepipe"
[ -f assets/sample.mp4 ] || "$framepipe" sample-video
exec "$framepipe" bench --mode all "$@"
