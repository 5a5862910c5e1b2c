"""Triton's Python clients (tritonclient.grpc and tritonclient.http) over TLS with an API key.

Run by tests/tls_keys.rs with: GRPC_ADDR HTTP_ADDR CA_PEM T10K_IMAGES_GZ EXPECTED_JSON, where the
JSON holds the label key, a key without the label scope, and the classes aelabel.v1's Label
answered for the first 16 test images. Exits non-zero on the first mismatch; prints one line per
check that passed.
"""

import gzip
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

COUNT = 16


def load_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(-1, 28, 28)[:COUNT]


def classes(client, module, images, headers):
    tensor = module.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    return client.infer("aelabel-classifier", [tensor], headers=headers).as_numpy("class_index")


def refused(what, call, status):
    try:
        call()
    except InferenceServerException as e:
        if status not in str(e.status()):
            sys.exit(f"{what}: got {e.status()} {e.message()!r}, want {status}")
        print(f"  refused {what}: {e.status()}")
        return
    sys.exit(f"{what}: accepted, but should be refused with {status}")


def check(transport, client, module, images, expected, status):
    assert client.is_server_live(), f"{transport}: not live"
    key = {"authorization": f"Bearer {expected['key']}"}
    got = classes(client, module, images, key)
    want = np.array(expected["classes"], dtype=np.int64)
    if not np.array_equal(got, want):
        sys.exit(f"{transport}: classes {got} differ from Label's {want}")
    print(f"{transport}: {COUNT} classes over TLS with a key equal Label's")
    refused(f"{transport} without a key", lambda: classes(client, module, images, {}), status["none"])
    wrong = {"authorization": f"Bearer {expected['wrong_key']}"}
    refused(f"{transport} with a key without `label`", lambda: classes(client, module, images, wrong), status["scope"])


def main():
    grpc_addr, http_addr, ca, images_path, expected_path = sys.argv[1:6]
    with open(expected_path) as f:
        expected = json.load(f)
    images = load_images(images_path)
    grpc = grpcclient.InferenceServerClient(url=grpc_addr, ssl=True, root_certificates=ca)
    check("grpc", grpc, grpcclient, images, expected, {"none": "UNAUTHENTICATED", "scope": "PERMISSION_DENIED"})
    http = httpclient.InferenceServerClient(url=http_addr, ssl=True, ssl_options={"ca_certs": ca})
    check("http", http, httpclient, images, expected, {"none": "401", "scope": "403"})


if __name__ == "__main__":
    main()
