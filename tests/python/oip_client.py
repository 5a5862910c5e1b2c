"""Triton's own Python clients (tritonclient.grpc and tritonclient.http) against aelabel.

Run by tests/oip.rs with: GRPC_ADDR HTTP_ADDR T10K_IMAGES_GZ EXPECTED_JSON, where the JSON
holds what aelabel.v1's Label (classes) and Encode (embeddings) answered for the first 1,000
test images. Exits non-zero on the first mismatch; prints one line per check that passed.
"""

import gzip
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

COUNT = 1000
BATCH = 250


def load_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    # IDX: a 16-byte header (magic, count, rows, columns), then the pixels.
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(-1, 28, 28)[:COUNT]


def expect_refusal(what, call, status, message):
    """`call` must raise with `status` and a message containing `message`."""
    try:
        call()
    except InferenceServerException as e:
        got_status, got_message = str(e.status()), e.message()
        if status not in got_status or message not in got_message:
            sys.exit(f"{what}: got {got_status} {got_message!r}, want {status} {message!r}")
        print(f"  refused {what}: {got_status} {got_message}")
        return
    sys.exit(f"{what}: accepted, but should be refused with {status}")


def check(transport, client, module, images, expected, status):
    """Classes, embeddings, metadata and refusals through one of the two clients."""
    assert client.is_server_live(), f"{transport}: not live"
    assert client.is_server_ready(), f"{transport}: not ready"
    assert client.is_model_ready("aelabel-classifier"), f"{transport}: classifier not ready"
    metadata = client.get_model_metadata("aelabel-encoder")
    if transport == "grpc":
        versions = list(metadata.versions)
        outputs = [(o.name, o.datatype, list(o.shape)) for o in metadata.outputs]
    else:
        versions = metadata["versions"]
        outputs = [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]]
    assert versions == [expected["version"]], f"{transport}: versions {versions}"
    assert outputs == [("embedding", "FP32", [-1, 30])], f"{transport}: outputs {outputs}"

    classes, embeddings = [], []
    for start in range(0, COUNT, BATCH):
        batch = images[start : start + BATCH]
        images_in = module.InferInput("images", list(batch.shape), "UINT8")
        images_in.set_data_from_numpy(batch)
        result = client.infer("aelabel-classifier", [images_in])
        classes.append(result.as_numpy("class_index"))
        result = client.infer(
            "aelabel-encoder",
            [images_in],
            outputs=[module.InferRequestedOutput("embedding")],
        )
        embeddings.append(result.as_numpy("embedding"))
    classes = np.concatenate(classes)
    embeddings = np.concatenate(embeddings)
    want_classes = np.array(expected["classes"], dtype=np.int64)
    if not np.array_equal(classes, want_classes):
        differ = int((classes != want_classes).sum())
        sys.exit(f"{transport}: {differ} of {COUNT} classes differ from Label's")
    print(f"{transport}: {COUNT} classes equal Label's")
    want_embeddings = np.array(expected["embeddings"], dtype=np.float32).reshape(COUNT, -1)
    gap = float(np.abs(embeddings - want_embeddings).max())
    if gap > 1e-6:
        sys.exit(f"{transport}: embeddings differ from Encode's by up to {gap}")
    print(f"{transport}: {COUNT} embeddings equal Encode's (largest difference {gap:.2e})")

    # FP32 [N, 784] in [0, 1] gives the same classes.
    floats = (images[:BATCH].reshape(BATCH, 784) / 255.0).astype(np.float32)
    floats_in = module.InferInput("images", [BATCH, 784], "FP32")
    floats_in.set_data_from_numpy(floats)
    result = client.infer("aelabel-classifier", [floats_in])
    assert np.array_equal(result.as_numpy("class_index"), want_classes[:BATCH])
    print(f"{transport}: FP32 input gives the same classes")

    one = images[:1]

    def infer(model, datatype="UINT8", array=one, version="", outputs=None):
        tensor = module.InferInput("images", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        requested = [module.InferRequestedOutput(o) for o in outputs] if outputs else None
        return lambda: client.infer(model, [tensor], model_version=version, outputs=requested)

    expect_refusal("an unknown model", infer("nope"), status["not_found"], "model `nope` is not served here")
    expect_refusal(
        "an unknown version",
        infer("aelabel-encoder", version="v0"),
        status["not_found"],
        f"this server serves version `{expected['version']}`",
    )
    expect_refusal(
        "a wrong datatype",
        infer("aelabel-encoder", "INT32", one.astype(np.int32)),
        status["invalid"],
        "images: datatype INT32 is not accepted",
    )
    expect_refusal(
        "a wrong shape",
        infer("aelabel-encoder", array=one[:, :27, :]),
        status["invalid"],
        "images: shape [1, 27, 28] is not [N, 28, 28] or [N, 784]",
    )
    expect_refusal(
        "a batch over --max-batch",
        infer("aelabel-encoder", array=np.zeros((expected["max_batch"] + 1, 784), np.uint8)),
        status["invalid"],
        f"images: a batch of {expected['max_batch'] + 1} images is more than this server's --max-batch",
    )
    expect_refusal(
        "an unknown output",
        infer("aelabel-classifier", outputs=["logits"]),
        status["invalid"],
        "outputs[0]: model aelabel-classifier has no output `logits`",
    )
    expect_refusal(
        "FP32 outside [0, 1]",
        infer("aelabel-encoder", "FP32", np.full((1, 784), 2.0, np.float32)),
        status["invalid"],
        "images: element 0 is 2, outside [0, 1]",
    )


def main():
    grpc_addr, http_addr, images_path, expected_path = sys.argv[1:5]
    with open(expected_path) as f:
        expected = json.load(f)
    images = load_images(images_path)
    check(
        "grpc",
        grpcclient.InferenceServerClient(url=grpc_addr),
        grpcclient,
        images,
        expected,
        {"not_found": "NOT_FOUND", "invalid": "INVALID_ARGUMENT"},
    )
    http = httpclient.InferenceServerClient(url=http_addr)
    check("http", http, httpclient, images, expected, {"not_found": "404", "invalid": "400"})

    # JSON tensors both ways (binary_data=False) agree with the binary ones.
    batch = images[:16]
    tensor = httpclient.InferInput("images", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=False)
    result = http.infer(
        "aelabel-classifier",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("class_index", binary_data=False)],
    )
    assert np.array_equal(result.as_numpy("class_index"), np.array(expected["classes"][:16]))
    print("http: JSON tensors give the same classes")


if __name__ == "__main__":
    main()
