#!/usr/bin/env bash
# framepipe's test command (the README's, and what CI runs): installs what is missing, then runs every
# test that needs no GPU, the loom model checks of the runtime's hand-written protocols, and checks
# that the GPU feature builds.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

"$repo/scripts/setup.sh"
export PATH="$HOME/.cargo/bin:$PATH"
# Builds are slow on small machines: keep the target directory between runs, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/framepipe/target}"
# The camera demo's view is tested in a real headless Chromium (Debian's `chromium` package). Where it
# is installed, its test must run, not skip.
"$repo/scripts/apt-install.sh" chromium || echo "test: no chromium package here; the browser test will skip" >&2
if command -v chromium >/dev/null 2>&1; then
  export FRAMEPIPE_REQUIRE_CHROMIUM=1
fi

echo "== cargo test (all crates, default features)" >&2
cargo test --locked

echo "== loom model checks (runtime protocols)" >&2
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/loom" \
  cargo test --locked --release -p framepipe --lib loom_tests

echo "== the cuda feature builds (no GPU needed)" >&2
cargo check --locked -p framepipe-cli --features cuda

echo "tests: all green" >&2
