#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine (idempotent, quick when everything is there):
#   - system packages: OpenCV (video I/O, camera) with clang for its bindings, GStreamer plugins
#     (simulated live cameras), ffmpeg (a streaming peer for the camera tests), python3-pip (asset fetch);
#   - a Rust toolchain (rustup), if cargo is missing;
#   - the pinned, sha256-checked assets (ONNX Runtime library, models, test photos): fetch-assets.sh;
#   - the sample video, made from the photos: make-sample-video.sh (needs the framepipe binary, so it
#     is made by bench.sh / test.sh after the build).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$repo/scripts/apt-install.sh" \
  build-essential pkg-config clang libclang-dev libopencv-dev \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-tools \
  ffmpeg python3 python3-pip curl ca-certificates fonts-dejavu-core

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy -c rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

"$repo/scripts/fetch-assets.sh"
