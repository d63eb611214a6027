#!/usr/bin/env bash
# Puts Fashion-MNIST (the four IDX files) where noisytail looks for it.
# Order: already there -> Debian's dataset-fashion-mnist package -> torchvision's downloader.
set -euo pipefail
DEB_DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DEB_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST: found in $DEB_DIR"; exit 0
fi
if [ -n "${NOISYTAIL_DATA:-}" ] && ls "$NOISYTAIL_DATA"/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "Fashion-MNIST: found in $NOISYTAIL_DATA/fashion-mnist"; exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; then
    echo "Fashion-MNIST: installed the Debian package dataset-fashion-mnist ($DEB_DIR)"; exit 0
  fi
fi
echo "Fashion-MNIST: no Debian package; trying torchvision's downloader (needs internet)"
PY="${PY:-.venv/bin/python}"
"$PY" -c "from noisytail.data.sources import load_dataset; load_dataset('fashion_mnist', options={'download': True})"
