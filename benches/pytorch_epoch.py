#!/usr/bin/env python3
"""One joint-pretraining epoch of the reference recipe in PyTorch, for `benches/compare_train.sh`.

784-100-30-100-784, SELU hidden, sigmoid output, BCE, SGD lr 1.5, batch 32, on the first 55,000
Fashion-MNIST training images read from the Debian package's IDX files. Prints one JSON object
with the same keys as `aelabel bench train --json`. Not run in CI (PyTorch is a 5 GB wheel).
"""
import gzip, json, os, sys, time

import numpy as np
import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
data = os.environ.get("AELABEL_DATA", "/usr/share/datasets/fashion-mnist")
torch.set_num_threads(threads)
torch.manual_seed(42)

with gzip.open(os.path.join(data, "train-images-idx3-ubyte.gz")) as f:
    x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)[:55000]
x = torch.from_numpy(x.astype(np.float32) / 255.0)

model = torch.nn.Sequential(
    torch.nn.Linear(784, 100), torch.nn.SELU(),
    torch.nn.Linear(100, 30), torch.nn.SELU(),
    torch.nn.Linear(30, 100), torch.nn.SELU(),
    torch.nn.Linear(100, 784),
)
loss_fn = torch.nn.BCEWithLogitsLoss()
opt = torch.optim.SGD(model.parameters(), lr=1.5)
seconds = []
for _ in range(epochs):
    start = time.perf_counter()
    perm = torch.randperm(x.shape[0])
    total = 0.0
    for i in range(0, x.shape[0], 32):
        batch = x[perm[i:i + 32]]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch), batch)
        loss.backward()
        opt.step()
        total += loss.item() * batch.shape[0]
    seconds.append(time.perf_counter() - start)
median = sorted(seconds)[len(seconds) // 2]
print(json.dumps({
    "peer": f"pytorch {torch.__version__}",
    "threads": threads,
    "images": x.shape[0],
    "epoch_seconds": seconds,
    "seconds_per_epoch": median,
    "images_per_second": x.shape[0] / median,
    "final_loss": total / x.shape[0],
}))
