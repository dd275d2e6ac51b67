#!/usr/bin/env bash
# Set up t2i-cvae from nothing: Debian's Fashion-MNIST package (the offline data source),
# a virtual environment in .venv, and the package with its dev tools. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq dataset-fashion-mnist
  else
    echo "note: no apt-get; the download stage will fetch Fashion-MNIST from its mirrors" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "set up: activate with '. .venv/bin/activate'"
