"""Size and precision facts of an ONNX artifact, read from its graph.

Quantized weights live in packed uint8 initializers whose shapes do not show
how many weights they hold; the MatMulNBits and GatherBlockQuantized nodes
that read them do (K, N, bits). The graph is read without its external
weight file.
"""

from __future__ import annotations

from collections import Counter
from math import prod
from pathlib import Path

from phiquant.backends.base import ArtifactInfo
from phiquant.backends.onnx.build import (
    MODEL_FILE,
    config_stop_token_ids,
    read_genai_config,
)
from phiquant.backends.onnx.providers import config_device
from phiquant.errors import ArtifactError

# Rotary tables the builder precomputes: initializers, but not model weights.
_NOT_WEIGHTS = ("cos_cache", "sin_cache")
_FLOAT_NAMES = {"FLOAT": "fp32", "FLOAT16": "fp16", "BFLOAT16": "bf16"}
_SUB_BYTE_TYPES = {"INT4": 0.5, "UINT4": 0.5}


def describe_onnx(folder: Path) -> ArtifactInfo:
    import onnx

    folder = Path(folder)
    model_path = folder / MODEL_FILE
    if not model_path.exists():
        raise ArtifactError(
            f"{folder} has no {MODEL_FILE}",
            "Pass a folder made by `phiquant quantize --to onnx:...`",
        )
    config = read_genai_config(folder)
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    types: Counter[str] = Counter()
    weight_bytes = 0
    counted: set[str] = set()

    for node in graph.node:
        if node.op_type not in ("MatMulNBits", "GatherBlockQuantized"):
            continue
        attributes = {
            a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
        }
        bits = int(attributes.get("bits", 4))
        weight_name = _through_reshape(
            node.input[0 if _is_gather(node) else 1], producers
        )
        if weight_name in counted or weight_name not in initializers:
            continue  # a tied embedding reading the head's weights
        if _is_gather(node):
            count = _packed_count(initializers[weight_name], bits)
        else:
            count = int(attributes["K"]) * int(attributes["N"])
        types[f"int{bits}"] += count
        for name in (weight_name, *node.input[1:]):
            if name in initializers and name not in counted:
                weight_bytes += _nbytes(initializers[name])
                counted.add(name)

    for name, tensor in initializers.items():
        if name in counted or name in _NOT_WEIGHTS:
            continue
        type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
        types[_FLOAT_NAMES.get(type_name, type_name.lower())] += prod(tensor.dims)
        weight_bytes += _nbytes(tensor)

    files = [model_path, *sorted(folder.glob(f"{MODEL_FILE}.data"))]
    decoder = config.get("model", {})
    return ArtifactInfo(
        format="onnx",
        size_bytes=sum(path.stat().st_size for path in files),
        parameter_count=sum(types.values()),
        weight_bytes=weight_bytes,
        tensor_types=dict(types.most_common()),
        metadata={
            "execution_provider": config_device(config),
            "model_type": decoder.get("type"),
            "context_length": decoder.get("context_length"),
            "eos_token_id": config_stop_token_ids(config),
        },
    )


def _is_gather(node) -> bool:
    return node.op_type == "GatherBlockQuantized"


def _through_reshape(name: str, producers: dict) -> str:
    """The initializer behind a Reshape, as a shared embedding reads the head."""
    node = producers.get(name)
    while node is not None and node.op_type == "Reshape":
        name = node.input[0]
        node = producers.get(name)
    return name


def _packed_count(tensor, bits: int) -> int:
    import onnx

    type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
    values = prod(tensor.dims)
    return values if type_name in _SUB_BYTE_TYPES else values * (8 // bits)


def _nbytes(tensor) -> int:
    import onnx

    type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
    if type_name in _SUB_BYTE_TYPES:
        return (prod(tensor.dims) + 1) // 2
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return prod(tensor.dims) * itemsize
