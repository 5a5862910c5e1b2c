#!/usr/bin/env python3
"""Label spreading (scikit-learn's LabelSpreading) on the image folder written by
`benches/digits_folder.py`: the classic graph-based semi-supervised baseline, given the same
labelled images, the same unlabelled pool and the same test images as `aelabel pipeline`.

    /tmp/digits/bin/python benches/digits_label_spreading.py OUT

It fits on OUT/train (class folders labelled, unlabelled/ without labels) and prints the test
accuracy on OUT/test for a small grid of graphs (k-NN and RBF kernels, pixels scaled to [0, 1]),
each one's best being as generous to the baseline as a tuned run could be: the grid is judged
on the test set itself."""

import argparse
import json
import pathlib

import numpy as np
from PIL import Image
from sklearn.semi_supervised import LabelSpreading


def read(folder, labelled):
    xs, ys = [], []
    for path in sorted(folder.rglob("*.png")):
        cls = path.parent.name
        xs.append(np.asarray(Image.open(path), dtype=np.float64).ravel() / 255.0)
        ys.append(int(cls) if cls != "unlabelled" and labelled else -1)
    return np.array(xs), np.array(ys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=pathlib.Path)
    a = ap.parse_args()
    x, y = read(a.out / "train", True)
    xt, yt = read(a.out / "test", True)
    grid = [("knn", {"n_neighbors": k}) for k in (5, 7, 10, 15)]
    grid += [("rbf", {"gamma": g}) for g in (1.0, 2.0, 5.0, 10.0, 20.0)]
    results = []
    for kernel, params in grid:
        for alpha in (0.2, 0.5, 0.9):
            model = LabelSpreading(kernel=kernel, alpha=alpha, max_iter=200, **params)
            model.fit(x, y)
            acc = float((model.predict(xt) == yt).mean())
            results.append({"kernel": kernel, **params, "alpha": alpha, "test_accuracy": acc})
    best = max(results, key=lambda r: r["test_accuracy"])
    print(json.dumps({"labelled": int((y >= 0).sum()), "pool": len(y), "test": len(yt),
                      "best": best, "grid": results}, indent=1))


if __name__ == "__main__":
    main()
