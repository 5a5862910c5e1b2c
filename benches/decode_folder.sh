#!/usr/bin/env bash
# Decoding throughput of an image folder: writes N 64×64 PNGs (Fashion-MNIST images upscaled,
# with noise so they compress like photos; 10 class folders), then times `aelabel bench decode`
# resizing them to 28×28. Needs a python3 with Pillow and numpy (pip install pillow numpy;
# PYTHON=path/to/python picks one).
# Usage: benches/decode_folder.sh [N] [DIR]
set -euo pipefail
n=${1:-100000}
dir=${2:-/tmp/aelabel-decode-bench}
cd "$(dirname "$0")/.."
if [ ! -d "$dir" ] || [ "$(find "$dir" -name '*.png' | wc -l)" -ne "$n" ]; then
  rm -rf "$dir"
  "${PYTHON:-python3}" - "$n" "$dir" <<'PY'
import gzip, pathlib, sys
import numpy as np
from PIL import Image
n, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
raw = gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").read()[16:]
labels = gzip.open("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").read()[8:]
images = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)
rng = np.random.default_rng(0)
for i in range(n):
    k = i % len(images)
    big = np.asarray(Image.fromarray(images[k]).resize((64, 64), Image.BILINEAR), np.int16)
    noisy = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)
    folder = out / str(labels[k])
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(folder / f"{i}.png")
PY
fi
cargo build --release --locked -q
./target/release/aelabel bench decode "$dir" --input-size 28
