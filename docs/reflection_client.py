"""Calls aelabel knowing only what server reflection tells it (pip install grpcio grpcio-reflection).

    python3 docs/reflection_client.py 127.0.0.1:50051
"""
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
channel = grpc.insecure_channel(target)
database = ProtoReflectionDescriptorDatabase(channel)
print("services:", ", ".join(database.get_services()))

pool = descriptor_pool.DescriptorPool(database)
service = pool.FindServiceByName("aelabel.v1.Labeller")
for method in service.methods:
    print(f"  {method.name}({method.input_type.full_name}) -> {method.output_type.full_name}")


def unary(name, request_fields):
    method = service.methods_by_name[name]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{service.full_name}/{name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return call(request_class(**request_fields))


info = unary("GetModelInfo", {})
print("model", info.version, "classes", list(info.class_names))
image = {"id": "stripes", "raw": {"width": 28, "height": 28, "pixels": bytes((i * 7) % 256 for i in range(784))}}
labels = unary("Label", {"images": [image]})
p = labels.predictions[0]
print(f"label: {p.id} -> {p.class_name} ({p.confidence:.3f}), needs_review={p.needs_review}")
embedding = unary("Encode", {"images": [image]}).embeddings[0]
print("embedding:", [round(v, 3) for v in embedding.values[:5]], "...")
