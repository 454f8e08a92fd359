"""MLX formats and build options, checked before mlx-lm sees them.

A format is a float dtype (``fp32``, ``fp16``, ``bf16``), a uniform affine
quantization (``int8`` ... ``int2``: every quantizable matrix at that many
bits) or one of mlx-lm's mixed-precision recipes. ``mixed_4_6`` keeps 6 bits
for the projections holding v (Phi-3's fused ``qkv_proj``) and ``down_proj``
in the first and last eighth of the layers and every third layer between,
and for an untied output head; everything else, a tied embedding included,
gets 4 bits.

Options (``Target.options``; values may be strings, as a command line gives),
for quantized formats only:

- ``group_size``: 32, 64 or 128 weights share one scale and bias (64).
  Matrices whose rows are not a multiple of it stay unquantized.
- ``dtype``: ``bfloat16``, ``float16`` or ``float32``, the type of the
  scales, biases and unquantized tensors (default: the source's weight
  type, as mlx-lm does). Apple silicon runs half-precision scales fastest;
  MLX's Linux CPU build runs float32 scales about 10x faster and more
  accurately than bfloat16 ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phiquant.errors import UsageError

# Float formats -> the dtype name mlx-lm's converter takes.
FLOAT_FORMATS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Fewest bits a tied embedding (which is also the output head) is given.
TIED_HEAD_BITS = 8
# Uniform quantized formats -> bits per weight.
UNIFORM_BITS = {"int8": 8, "int6": 6, "int5": 5, "int4": 4, "int3": 3, "int2": 2}
# mlx-lm's mixed recipes (mlx_lm.convert.QUANT_RECIPES) -> (low bits, high bits).
RECIPE_BITS = {
    "mixed_4_6": (4, 6),
    "mixed_3_6": (3, 6),
    "mixed_3_4": (3, 4),
    "mixed_2_6": (2, 6),
}
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
DTYPE_NAMES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "float32": "float32",
    "fp32": "float32",
}
OPTION_NAMES = ("group_size", "dtype")
# safetensors dtype names -> mlx dtype names, for the source's weight type.
_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


@dataclass(frozen=True)
class MLXOptions:
    """Every choice that decides what mlx-lm writes for one target."""

    format: str
    dtype: str
    bits: int | None = None
    group_size: int | None = None
    recipe: str | None = None
    # Bits of the embedding when it differs from ``bits``: a tied embedding is
    # also the output head, and 4-bit heads are reported to loop endlessly.
    embedding_bits: int | None = None

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    def as_dict(self) -> dict[str, Any]:
        """What lands in the manifest's ``options``."""
        chosen: dict[str, Any] = {"dtype": self.dtype}
        if self.quantized:
            chosen |= {
                "mode": "affine",
                "bits": self.bits,
                "group_size": self.group_size,
            }
        if self.embedding_bits:
            chosen["embedding_bits"] = self.embedding_bits
        if self.recipe:
            low, high = RECIPE_BITS[self.recipe]
            chosen |= {"recipe": self.recipe, "low_bits": low, "high_bits": high}
        return chosen


def source_dtype(dtype_counts: dict[str, int]) -> str:
    """The mlx dtype name of most of a source's floating-point weights."""
    floats = {
        _SAFETENSORS_DTYPES[name]: count
        for name, count in dtype_counts.items()
        if name in _SAFETENSORS_DTYPES
    }
    return max(floats, key=floats.__getitem__) if floats else "bfloat16"


def resolve_options(
    format_name: str,
    options: dict[str, object],
    default_dtype: str,
    tied_embeddings: bool = False,
) -> MLXOptions:
    """Validate ``options`` for an MLX format; raise UsageError naming what works."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise UsageError(
            f"unknown mlx option(s): {', '.join(unknown)}",
            f"MLX options are: {', '.join(OPTION_NAMES)}; the bits are part of "
            "the precision (mlx:int4, mlx:int6, mlx:mixed_4_6)",
        )
    if format_name in FLOAT_FORMATS:
        if options:
            raise UsageError(
                f"mlx:{format_name} takes no options (got "
                f"{', '.join(sorted(options))})",
                "group_size and dtype apply to quantized targets such as mlx:int4",
            )
        return MLXOptions(format_name, FLOAT_FORMATS[format_name])

    if format_name in RECIPE_BITS:
        bits, recipe = RECIPE_BITS[format_name][0], format_name
    else:
        bits, recipe = UNIFORM_BITS[format_name], None
    keep_head = tied_embeddings and recipe is None and bits < TIED_HEAD_BITS
    return MLXOptions(
        format=format_name,
        dtype=_choice(options, "dtype", DTYPE_NAMES, default_dtype),
        bits=bits,
        group_size=_group_size(options),
        recipe=recipe,
        embedding_bits=TIED_HEAD_BITS if keep_head else None,
    )


def _group_size(options: dict[str, object]) -> int:
    raw = options.get("group_size", DEFAULT_GROUP_SIZE)
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        value = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        value = None
    if value not in GROUP_SIZES:
        raise UsageError(
            f"mlx option group_size={raw!r} is not valid",
            f"Choose one of: {', '.join(map(str, GROUP_SIZES))}",
        )
    return value


def _choice(
    options: dict[str, object], name: str, allowed: dict[str, str], default: str
) -> str:
    if name not in options:
        return default
    raw = options[name]
    value = allowed.get(str(raw).strip().lower())
    if value is None:
        raise UsageError(
            f"mlx option {name}={raw!r} is not valid",
            f"Choose one of: {', '.join(dict.fromkeys(allowed.values()))}",
        )
    return value
