#!/usr/bin/env bash
# Set up t2i-cvae from nothing: Debian's Fashion-MNIST package (the offline data source),
# the DejaVu fonts (figure labels), Chromium (the report test opens pages in it), a virtual
# environment in .venv, and the package with its dev tools and the demo's Gradio. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
  else
    echo "note: no apt-get for ${missing[*]}: the download stage will use the mirrors," \
         "figures need the DejaVu Sans font installed by hand," \
         "and the report test is skipped without chromium" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,demo]'
echo "set up: activate with '. .venv/bin/activate'"
