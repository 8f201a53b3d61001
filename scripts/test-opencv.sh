#!/usr/bin/env bash
# Tests of the optional `opencv` feature (the OpenCV media backend, and OpenCV as a reference in the
# vision crate's parity test): installs the system's OpenCV with clang for its bindings and the
# GStreamer tools (a simulated live camera), then tests the crates that the feature touches.
# CI runs it after scripts/test.sh; the default build needs none of this.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

"$repo/scripts/setup.sh"
"$repo/scripts/apt-install.sh" pkg-config clang libclang-dev libopencv-dev \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-tools
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/framepipe/target}"

echo "== cargo test --features opencv (media layer, vision parity)" >&2
cargo test --locked -p framepipe-video --features opencv
cargo test --locked -p framepipe-vision --features opencv --test opencv_parity
echo "== the two backends give the same detections" >&2
cargo test --locked -p framepipe-app --features opencv --test media_agreement -- --nocapture
echo "== the binary builds with --features opencv" >&2
cargo check --locked -p framepipe-cli --features opencv
echo "tests (opencv feature): all green" >&2
