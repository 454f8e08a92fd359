"""Read facts back from a GGUF file: tensor types, sizes and key metadata."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from phiquant.backends.base import ArtifactInfo
from phiquant.errors import ArtifactError

# Metadata keys worth showing, with the architecture prefix left out.
SHOWN_KEYS = (
    "general.architecture",
    "general.file_type",
    "{arch}.context_length",
    "{arch}.embedding_length",
    "{arch}.block_count",
    "{arch}.attention.head_count",
    "{arch}.attention.head_count_kv",
    "{arch}.attention.sliding_window",
    "{arch}.rope.freq_base",
    "{arch}.rope.dimension_count",
    "{arch}.rope.scaling.original_context_length",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.add_bos_token",
)


def open_reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as error:  # the reader raises ValueError, IndexError, ...
        raise ArtifactError(
            f"{path} is not a readable GGUF file ({error})",
            "The file is truncated or corrupt; rebuild or re-download it",
        ) from error


def _field_value(reader, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def describe_gguf(path: Path) -> ArtifactInfo:
    """Tensor type mix, parameter count, bytes and key metadata of a GGUF."""
    reader = open_reader(path)
    arch = _field_value(reader, "general.architecture")
    types: Counter[str] = Counter()
    weight_bytes = 0
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] += int(tensor.n_elements)
        weight_bytes += int(tensor.n_bytes)
    metadata = {}
    for key in SHOWN_KEYS:
        value = _field_value(reader, key.format(arch=arch))
        if value is not None:
            metadata[key.format(arch=arch)] = value
    metadata["tokenizer.chat_template"] = (
        "present" if "tokenizer.chat_template" in reader.fields else "missing"
    )
    return ArtifactInfo(
        format="gguf",
        size_bytes=path.stat().st_size,
        parameter_count=sum(types.values()),
        weight_bytes=weight_bytes,
        tensor_types=dict(types.most_common()),
        metadata=metadata,
    )


def gguf_stop_token_ids(path: Path) -> list[int]:
    """EOS and EOT ids that llama.cpp ends generation at."""
    reader = open_reader(path)
    ids = [
        _field_value(reader, f"tokenizer.ggml.{role}_token_id")
        for role in ("eos", "eot")
    ]
    return sorted({int(i) for i in ids if i is not None})
