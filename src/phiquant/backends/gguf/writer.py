"""Write a GGUF file from a source checkpoint with gguf-py.

This writes the formats gguf-py can encode itself (F32, F16, BF16, Q8_0);
the k-quants are made from its BF16 output by llama.cpp (see ``quantize.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from phiquant.backends.base import ProgressFn, no_progress
from phiquant.backends.gguf.vocab import add_tokenizer
from phiquant.errors import SourceError
from phiquant.sources import ModelSource

Q = gguf.GGMLQuantizationType
DIRECT_TYPES = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16, "Q8_0": Q.Q8_0}
FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


def _arch_enum(name: str) -> gguf.MODEL_ARCH:
    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == name:
            return arch
    raise SourceError(f"gguf-py knows no architecture {name!r}", "Upgrade gguf")


def longrope_attention_factor(traits) -> float:
    """The logit scale longrope applies once the context passes its trained length."""
    if traits.rope.attention_factor is not None:
        return float(traits.rope.attention_factor)
    scale = traits.max_position_embeddings / traits.original_max_position_embeddings
    if scale <= 1.0:
        return 1.0
    return math.sqrt(
        1 + math.log(scale) / math.log(traits.original_max_position_embeddings)
    )


def _add_hparams(writer: gguf.GGUFWriter, source: ModelSource, file_type: int) -> None:
    traits = source.traits
    writer.add_name(source.name)
    writer.add_file_type(file_type)
    writer.add_vocab_size(traits.vocab_size)
    writer.add_context_length(traits.max_position_embeddings)
    writer.add_embedding_length(traits.hidden_size)
    writer.add_block_count(traits.num_layers)
    writer.add_feed_forward_length(traits.intermediate_size)
    writer.add_head_count(traits.num_heads)
    writer.add_head_count_kv(traits.num_kv_heads)
    if traits.head_dim * traits.num_heads != traits.hidden_size:
        writer.add_key_length(traits.head_dim)
        writer.add_value_length(traits.head_dim)
    if source.family.norm == "layer":
        writer.add_layer_norm_eps(traits.norm_eps)
    else:
        writer.add_layer_norm_rms_eps(traits.norm_eps)
    writer.add_rope_freq_base(traits.rope_theta)
    writer.add_rope_dimension_count(traits.rotary_dim)
    if traits.sliding_window:
        writer.add_sliding_window(int(traits.sliding_window))
    if traits.rope.kind == "longrope":
        writer.add_rope_scaling_attn_factors(longrope_attention_factor(traits))
        writer.add_rope_scaling_orig_ctx_len(traits.original_max_position_embeddings)
    elif traits.rope.kind != "default":
        raise SourceError(
            f"rope scaling {traits.rope.kind!r} is not supported by the GGUF backend",
            "Supported: no scaling or longrope",
        )


def _rope_rows_to_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from Hugging Face's half-split rotation to llama.cpp's pairs."""
    head_rows = weight.shape[0] // n_heads
    return (
        weight.reshape(n_heads, 2, head_rows // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _prepare(name: str, data: np.ndarray, source: ModelSource) -> np.ndarray:
    if source.family.gguf_permute_qk:
        if name.endswith("self_attn.q_proj.weight"):
            return _rope_rows_to_interleaved(data, source.traits.num_heads)
        if name.endswith("self_attn.k_proj.weight"):
            return _rope_rows_to_interleaved(data, source.traits.num_kv_heads)
    return data


def _tensor_type(data: np.ndarray, wanted: Q) -> Q:
    if data.ndim < 2:
        return Q.F32  # norms and biases stay exact; llama.cpp expects F32 here
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    if data.shape[-1] % block:
        return Q.F16  # the row cannot be split into this type's blocks
    return wanted


def _encode(data: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q | None]:
    encoded = gguf.quants.quantize(data, qtype)
    # Float arrays carry their type; block-encoded ones are raw bytes.
    return encoded, (None if qtype in (Q.F32, Q.F16) else qtype)


def write_gguf(
    source: ModelSource,
    path: Path,
    quant: str,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Write ``source`` as a GGUF of type ``quant``; return type mix and metadata."""
    wanted = DIRECT_TYPES[quant]
    arch = source.family.gguf_arch
    traits = source.traits
    writer = gguf.GGUFWriter(path, arch, use_temp_file=True)
    _add_hparams(writer, source, FILE_TYPES[quant])
    tokenizer_info = add_tokenizer(writer, source)

    name_map = gguf.get_tensor_name_map(_arch_enum(arch), traits.num_layers)
    names = source.tensor_names()
    type_counts: Counter[str] = Counter()
    for index, (name, tensor) in enumerate(source.tensors()):
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise SourceError(
                f"tensor {name} has no GGUF equivalent for {arch}",
                "The checkpoint does not match its declared architecture",
            )
        if traits.tie_word_embeddings and gguf_name == "output.weight":
            continue  # llama.cpp reuses token_embd when output is absent
        data = _prepare(name, tensor.float().numpy(), source)
        qtype = _tensor_type(data, wanted)
        encoded, raw_dtype = _encode(data, qtype)
        writer.add_tensor(gguf_name, encoded, raw_dtype=raw_dtype)
        type_counts[qtype.name] += data.size
        progress(index + 1, len(names), f"writing {quant} tensors")

    if traits.rope.kind == "longrope":
        for kind in ("long", "short"):
            factors = getattr(traits.rope, f"{kind}_factor")
            if not factors:
                raise SourceError(f"longrope config lacks {kind}_factor", "")
            writer.add_tensor(
                f"rope_factors_{kind}.weight", np.asarray(factors, dtype=np.float32)
            )

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensor_types": dict(type_counts), **tokenizer_info}
