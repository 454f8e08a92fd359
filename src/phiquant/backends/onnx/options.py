"""Quantization options of ONNX targets, checked before the builder sees them.

onnxruntime-genai's model builder takes free-form ``extra_options``: it
silently ignores keys it does not know and accepts combinations that produce
models ONNX Runtime cannot load. phiquant takes a small, named set instead,
validates each value and each combination, and translates the result into
builder options.

Options (``Target.options``; values may be strings, as a command line gives):

- ``block_size``: 16, 32, 64, 128 or 256 weights per quantization block (32).
- ``accuracy_level``: 0-4, the compute type of quantized MatMuls: 1 fp32,
  2 fp16, 3 bf16, 4 int8 activations; 0 lets the kernel choose
  (4 on cpu and webgpu, 0 elsewhere).
- ``algorithm``: ``default`` (the builder's own round-to-nearest), ``rtn``
  or ``k_quant``.
- ``symmetric``: true for signed int4/int8 blocks, false for unsigned blocks
  with zero points (true).
- ``head``: ``int8`` or ``int4``, the type of the output projection (lm_head)
  in int4 builds: int8 for tied-embedding models, int4 otherwise.
- ``embedding``: ``shared`` (the embedding reads the head's weights, tied
  models only), ``int4`` (its own int4 copy) or ``float`` (unquantized).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from phiquant.errors import UsageError

BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
ALGORITHMS = ("default", "rtn", "k_quant")
HEAD_TYPES = ("int8", "int4")
EMBEDDING_KINDS = ("shared", "int4", "float")
OPTION_NAMES = (
    "block_size",
    "accuracy_level",
    "algorithm",
    "symmetric",
    "head",
    "embedding",
)
QUANTIZED_PRECISIONS = ("int4", "int8")


@dataclass(frozen=True)
class QuantOptions:
    """Every choice that decides how an int4/int8 ONNX model is quantized."""

    block_size: int
    accuracy_level: int
    algorithm: str
    symmetric: bool
    head: str
    embedding: str

    def builder_options(self, precision: str) -> dict[str, str]:
        """The builder's ``extra_options`` that produce exactly these choices."""
        options = {
            "block_size": str(self.block_size),
            "accuracy_level": str(self.accuracy_level),
            "algo_config": self.algorithm,
            "is_symmetric": _flag(self.symmetric),
            "shared_embeddings": _flag(self.embedding == "shared"),
        }
        # The builder quantizes the embedding lookup only when Gather is listed.
        if self.embedding in ("shared", "int4"):
            options["op_types_to_quantize"] = "MatMul/Gather"
        if precision == "int4" and self.head == "int8":
            options["matmul_mixed_precision"] = "last_matmul:int8"
        return options

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def resolve_options(
    precision: str,
    device: str,
    options: dict[str, object],
    *,
    tied_embeddings: bool,
) -> QuantOptions | None:
    """Validate ``options`` for a target; None for float precisions.

    Raises UsageError with one line naming what would work.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise UsageError(
            f"unknown onnx option(s): {', '.join(unknown)}",
            f"ONNX options are: {', '.join(OPTION_NAMES)}",
        )
    if precision not in QUANTIZED_PRECISIONS:
        if options:
            raise UsageError(
                f"onnx:{precision} takes no quantization options "
                f"(got {', '.join(sorted(options))})",
                "They apply to onnx:int4 and onnx:int8",
            )
        return None

    chosen = QuantOptions(
        block_size=_choice(options, "block_size", BLOCK_SIZES, 32, _as_int),
        accuracy_level=_choice(
            options,
            "accuracy_level",
            ACCURACY_LEVELS,
            4 if device in ("cpu", "webgpu") else 0,
            _as_int,
        ),
        algorithm=_choice(options, "algorithm", ALGORITHMS, "default", str),
        symmetric=_choice(options, "symmetric", (True, False), True, _as_bool),
        head=_choice(
            options,
            "head",
            HEAD_TYPES,
            "int8" if precision == "int8" or tied_embeddings else "int4",
            str,
        ),
        embedding=_choice(
            options,
            "embedding",
            EMBEDDING_KINDS,
            _default_embedding(precision, options, tied_embeddings),
            str,
        ),
    )
    _check_combination(precision, chosen, tied_embeddings)
    return chosen


def _default_embedding(
    precision: str, options: dict[str, object], tied_embeddings: bool
) -> str:
    """Share the head's weights where that builds a loadable model, else int4."""
    if precision == "int8":
        return "float"
    if not tied_embeddings:
        return "float"
    head = str(options.get("head", "int8"))
    algorithm = str(options.get("algorithm", "default"))
    symmetric = _as_bool(options.get("symmetric", True))
    if not symmetric or (head == "int8" and algorithm == "default"):
        return "int4"
    return "shared"


def _check_combination(
    precision: str, chosen: QuantOptions, tied_embeddings: bool
) -> None:
    if precision == "int8" and chosen.head != "int8":
        raise UsageError(
            "onnx:int8 quantizes every MatMul to int8, so head=int4 does not apply",
            "Use onnx:int4 with head=int4, or drop the head option",
        )
    if precision == "int8" and chosen.embedding != "float":
        raise UsageError(
            f"onnx:int8 cannot store the embedding as {chosen.embedding} (ONNX "
            "Runtime's quantized embedding lookup is 4-bit only)",
            "Drop the embedding option, or use onnx:int4",
        )
    if chosen.embedding != "shared":
        return
    if not tied_embeddings:
        raise UsageError(
            "embedding=shared needs a model that ties its embedding and head, "
            "and this source does not (tie_word_embeddings is false)",
            "Use embedding=int4 or embedding=float",
        )
    if not chosen.symmetric:
        raise UsageError(
            "asymmetric int4 with a shared embedding builds a model ONNX Runtime "
            "cannot load",
            "Use symmetric=true, or embedding=int4 with symmetric=false",
        )
    if chosen.head == "int8" and chosen.algorithm == "default":
        raise UsageError(
            "an int8 head cannot be shared with the embedding under "
            "algorithm=default (the builder wires the lookup to tensors it never "
            "writes)",
            "Use embedding=int4, algorithm=rtn or k_quant, or head=int4",
        )


def _choice(options, name, allowed, default, parse):
    if name not in options:
        return default
    raw = options[name]
    try:
        value = parse(raw)
    except (TypeError, ValueError):
        value = None
    if value not in allowed:
        shown = ", ".join(str(a).lower() for a in allowed)
        raise UsageError(
            f"onnx option {name}={raw!r} is not valid", f"Choose one of: {shown}"
        )
    return value


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")
