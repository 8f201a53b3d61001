#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine (idempotent, quick when everything is there):
#   - system packages: a C/C++ compiler (OpenH264 is built from source by its crate), nasm (its
#     assembly, optional but 2-3x faster decoding), ffmpeg (the test peer: makes test videos and
#     serves streams), python3-pip (asset fetch). No OpenCV: the default build's media layer is
#     native (scripts/test-opencv.sh installs OpenCV for the optional `opencv` feature);
#   - a Rust toolchain (rustup), if cargo is missing;
#   - the pinned, sha256-checked assets (ONNX Runtime library, models, test photos): fetch-assets.sh;
#   - the sample video, made from the photos: make-sample-video.sh (needs the framepipe binary, so it
#     is made by bench.sh / test.sh after the build).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$repo/scripts/apt-install.sh" \
  build-essential nasm ffmpeg python3 python3-pip curl ca-certificates fonts-dejavu-core

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
