#!/usr/bin/env python3
"""Writes scikit-learn's bundled 8x8 digits (1,797 images, 10 classes, shipped inside the
package: nothing is downloaded) as an aelabel image folder, for a second data set:

    python3 -m venv /tmp/digits && /tmp/digits/bin/pip install scikit-learn pillow
    /tmp/digits/bin/python benches/digits_folder.py OUT [--labels-per-class 10] [--test 500]
    aelabel pipeline --data OUT/train --test OUT/test --out runs/digits

OUT/train/<digit>/ holds the labelled images, OUT/train/unlabelled/ the rest of the pool,
OUT/test/<digit>/ a held-out test set (stratified, seeded)."""

import argparse
import pathlib
import random

from PIL import Image
from sklearn.datasets import load_digits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--test", type=int, default=500, help="held-out test images")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    digits = load_digits()
    order = list(range(len(digits.target)))
    random.Random(a.seed).shuffle(order)
    test, pool = order[: a.test], order[a.test :]
    taken = {}
    held_out = set(test)
    for i in test + pool:
        label = int(digits.target[i])
        pixels = (digits.images[i] * (255.0 / 16.0)).round().astype("uint8")
        if i in held_out:
            folder = a.out / "test" / str(label)
        elif taken.get(label, 0) < a.labels_per_class:
            taken[label] = taken.get(label, 0) + 1
            folder = a.out / "train" / str(label)
        else:
            folder = a.out / "train" / "unlabelled"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    print(f"wrote {len(pool)} training images ({sum(taken.values())} labelled) and {len(test)} test images to {a.out}")


if __name__ == "__main__":
    main()
