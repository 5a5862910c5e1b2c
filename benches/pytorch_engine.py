#!/usr/bin/env python3
"""PyTorch running an aelabel `model.safetensors`, for `benches/compare_engine.sh`.

Reads the same tensors aelabel serves (`encoder.{i}.weight|bias`, weights stored `[in, out]`;
`classifier.{i}.weight|bias` and `classifier.head.weight|bias`), and times what the engine does
for a batch of 8-bit images: pixel / 255, then addmm + SELU per layer (plus softmax for
`label`), under `torch.inference_mode`. Inputs are Fashion-MNIST's t10k images cycled to fill
the batch, as `aelabel bench engine` uses. Prints one JSON object with the keys of
`aelabel bench engine --json`. Not run in CI (PyTorch is a large wheel).

Usage: pytorch_engine.py MODEL encode|label BATCH THREADS SECONDS
"""
import gzip, json, os, sys, time

import numpy as np
import torch
from safetensors.torch import load_file

model_path, task = sys.argv[1], sys.argv[2]
batch, threads, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
data = os.environ.get("AELABEL_DATA", "/usr/share/datasets/fashion-mnist")
torch.set_num_threads(threads)

tensors = load_file(model_path)
prefix = "encoder" if task == "encode" else "classifier"
layers = []
i = 0
while f"{prefix}.{i}.weight" in tensors:
    layers.append((tensors[f"{prefix}.{i}.weight"].contiguous(), tensors[f"{prefix}.{i}.bias"]))
    i += 1
head = None
if task == "label":
    head = (tensors["classifier.head.weight"].contiguous(), tensors["classifier.head.bias"])
width = layers[0][0].shape[0]

with gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")) as f:
    sample = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
pixels = np.resize(sample, batch * width).reshape(batch, width)
pixels = torch.from_numpy(pixels.copy())


def run(images):
    x = images.to(torch.float32).div_(255.0)
    for w, b in layers:
        x = torch.selu(torch.addmm(b, x, w))
    if head is not None:
        x = torch.softmax(torch.addmm(head[1], x, head[0]), dim=1)
    return x


with torch.inference_mode():
    run(pixels)
    cpu_before = time.process_time()
    started = time.perf_counter()
    passes = 0
    while time.perf_counter() - started < seconds:
        run(pixels)
        passes += 1
    images_per_second = passes * batch / (time.perf_counter() - started)
    images_per_cpu_second = passes * batch / max(time.process_time() - cpu_before, 1e-9)
    singles = [pixels[i:i + 1] for i in range(min(batch, 1024))]
    times = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds / 2 or len(times) < 100:
        one = singles[len(times) % len(singles)]
        t = time.perf_counter()
        run(one)
        times.append((time.perf_counter() - t) * 1e6)
times.sort()
print(json.dumps({
    "peer": f"pytorch {torch.__version__}",
    "task": task,
    "batch": batch,
    "threads": threads,
    "images_per_second": images_per_second,
    "images_per_cpu_second": images_per_cpu_second,
    "single_image_p50_us": times[len(times) // 2],
    "single_image_p99_us": times[min(len(times) - 1, int(len(times) * 0.99))],
}))
