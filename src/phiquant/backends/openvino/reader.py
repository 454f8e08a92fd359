"""Facts about an OpenVINO IR folder, read from its files without the runtime."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from phiquant.artifacts import MANIFEST_NAME
from phiquant.backends.base import ArtifactInfo
from phiquant.backends.openvino.export import GENERATION_CONFIG, MODEL_BIN, MODEL_XML
from phiquant.errors import ArtifactError

# Constants of these types hold shapes and indices, not weights.
INDEX_TYPES = {"i64", "i32", "boolean"}
# IR element type -> bytes per value; the 4-bit types pack two per byte.
BYTES_PER_VALUE = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "u8": 1.0,
    "i8": 1.0,
    "u4": 0.5,
    "i4": 0.5,
    "nf4": 0.5,
}


def require_ir(folder: Path) -> Path:
    """The model XML of an artifact folder, or a clear error if it has none."""
    path = Path(folder) / MODEL_XML
    if not path.is_file() or not (Path(folder) / MODEL_BIN).is_file():
        raise ArtifactError(
            f"{folder} holds no OpenVINO IR ({MODEL_XML} and {MODEL_BIN})",
            "Pass a folder made by `phiquant quantize --to openvino:...`",
        )
    return path


def describe_ir(folder: Path) -> ArtifactInfo:
    """Size, parameter count and the real weight-type mix of an IR folder.

    Weights are the constants whose last axis is longer than one: NNCF's
    scales and zero points have a trailing axis of one (one per row or per
    group) and count towards the bytes but not the parameters.
    """
    root = ElementTree.parse(require_ir(folder)).getroot()
    tensor_types: dict[str, int] = {}
    weight_bytes = 0
    for layer in root.iter("layer"):
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        element_type = data.get("element_type", "") if data is not None else ""
        if element_type in INDEX_TYPES or data is None:
            continue
        shape = [int(dim) for dim in data.get("shape", "").split(",") if dim.strip()]
        weight_bytes += int(data.get("size", 0))
        if len(shape) >= 1 and shape[-1] > 1:
            tensor_types[element_type] = tensor_types.get(element_type, 0) + math.prod(
                shape
            )

    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return ArtifactInfo(
        format="OpenVINO IR",
        size_bytes=sum(p.stat().st_size for p in files if p.name != MANIFEST_NAME),
        parameter_count=sum(tensor_types.values()),
        weight_bytes=weight_bytes,
        tensor_types=dict(sorted(tensor_types.items(), key=lambda kv: -kv[1])),
        metadata=_metadata(root, Path(folder)),
    )


def _metadata(root: ElementTree.Element, folder: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    rt_info = root.find("rt_info")
    if rt_info is not None:
        runtime = rt_info.find("Runtime_version")
        if runtime is not None:
            metadata["openvino_version"] = runtime.get("value")
        compression = rt_info.find("nncf/weight_compression")
        if compression is not None:
            metadata["weight_compression"] = {
                item.tag: item.get("value")
                for item in compression
                if item.tag != "advanced_parameters"
            }
    metadata["stop_token_ids"] = stop_token_ids(folder)
    return metadata


def stop_token_ids(folder: Path) -> list[int]:
    """The ids GenAI stops at, as ``generation_config.json`` lists them."""
    path = Path(folder) / GENERATION_CONFIG
    if not path.is_file():
        return []
    value = json.loads(path.read_text()).get("eos_token_id")
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]
