"""Size and precision of an MLX artifact, read from its files without loading MLX.

mlx-lm stores a quantized matrix as ``NAME.weight`` (packed uint32),
``NAME.scales`` and ``NAME.biases``; its bits and group size are in
config.json's ``quantization`` table (global values, overridden per layer
by mixed recipes).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from phiquant.artifacts import MANIFEST_NAME, read_artifact_json
from phiquant.backends.base import ArtifactInfo
from phiquant.errors import ArtifactError, SourceError
from phiquant.sources.model import read_safetensors_header

# safetensors dtype -> the name phiquant reports for unquantized tensors.
FLOAT_TYPE_NAMES = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}
_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "U32": 4, "U8": 1, "I32": 4}


def weight_files(artifact_dir: Path) -> list[Path]:
    """The safetensors files mlx-lm loads from a folder (``model*.safetensors``)."""
    return sorted(Path(artifact_dir).glob("model*.safetensors"))


def read_config(artifact_dir: Path) -> dict[str, Any]:
    """config.json of an MLX folder, or one clear error if it is not one."""
    missing = "is not an MLX model folder (no config.json and model*.safetensors)"
    todo = "Pass a folder made by `phiquant quantize --to mlx:...`"
    if not weight_files(artifact_dir):
        raise ArtifactError(f"{artifact_dir} {missing}", todo)
    return read_artifact_json(artifact_dir, "config.json", missing, todo)


def quantization_of(config: dict[str, Any], module: str) -> tuple[int, int]:
    """(bits, group size) that mlx-lm uses for ``module``."""
    table = config.get("quantization") or {}
    entry = table.get(module)
    if not isinstance(entry, dict):
        entry = table
    if "bits" not in entry or "group_size" not in entry:
        raise ArtifactError(
            f"config.json has scales for {module} but no quantization bits",
            "The artifact is incomplete; rebuild it",
        )
    return int(entry["bits"]), int(entry["group_size"])


def describe_mlx(artifact_dir: Path) -> ArtifactInfo:
    """Parameter counts per storage type, read from headers and config.json."""
    artifact_dir = Path(artifact_dir)
    config = read_config(artifact_dir)
    entries: dict[str, dict[str, Any]] = {}
    for path in weight_files(artifact_dir):
        try:
            entries.update(read_safetensors_header(path))
        except SourceError as error:  # the reader speaks of sources; this is output
            raise ArtifactError(error.what, "Rebuild the artifact") from error

    types: Counter[str] = Counter()
    weight_bytes = 0
    for name, entry in entries.items():
        size = _element_count(entry["shape"])
        weight_bytes += size * _DTYPE_BYTES.get(entry["dtype"], 4)
        module, _, leaf = name.rpartition(".")
        if leaf in ("scales", "biases") and f"{module}.weight" in entries:
            continue  # quantization overhead: bytes, not parameters
        if leaf == "weight" and f"{module}.scales" in entries:
            bits, group_size = quantization_of(config, module)
            types[f"int{bits}/g{group_size}"] += size * 32 // bits
        else:
            types[FLOAT_TYPE_NAMES.get(entry["dtype"], entry["dtype"].lower())] += size

    size_bytes = sum(
        path.stat().st_size
        for path in artifact_dir.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    )
    quantization = {
        k: v for k, v in (config.get("quantization") or {}).items() if "." not in k
    }
    return ArtifactInfo(
        format="mlx",
        size_bytes=size_bytes,
        parameter_count=sum(types.values()),
        weight_bytes=weight_bytes,
        tensor_types=dict(types.most_common()),
        metadata={
            "model_type": config.get("model_type"),
            "dtype": config.get("torch_dtype"),
            "quantization": quantization or None,
            "eos_token_id": _eos_ids(artifact_dir, config),
            "rope_theta": config.get("rope_theta"),
            "rope_scaling_type": (config.get("rope_scaling") or {}).get("type"),
        },
    )


def _element_count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _eos_ids(artifact_dir: Path, config: dict[str, Any]) -> list[int]:
    """The stop ids mlx_lm.load uses: generation_config.json's, else config.json's."""
    value = config.get("eos_token_id")
    generation = artifact_dir / "generation_config.json"
    if generation.exists():
        try:
            value = json.loads(generation.read_text()).get("eos_token_id") or value
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # mlx-lm ignores an unreadable generation config too
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]
