"""OpenVINO formats and the weight-compression options a target may carry.

Options arrive in ``Target.options`` as Python values or, from a command
line, as strings; both are checked here, before any slow work starts, and
turned into one :class:`CompressionSettings` that the build follows and the
manifest records (``openvino_config.json`` does not record them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiquant.errors import UsageError
from phiquant.sources.config import ModelTraits


@dataclass(frozen=True)
class Format:
    """One OpenVINO format: how it is exported, then compressed."""

    precision: str  # generic class: fp32, fp16, int8, int4
    export_dtype: str  # weight type optimum-intel writes: fp32 or fp16
    nncf_mode: str | None  # NNCF CompressWeightsMode value, None for float


FORMATS = {
    "FP32": Format("fp32", "fp32", None),
    "FP16": Format("fp16", "fp16", None),
    "INT8_ASYM": Format("int8", "fp16", "int8_asym"),
    "INT8_SYM": Format("int8", "fp16", "int8_sym"),
    "INT4_SYM": Format("int4", "fp16", "int4_sym"),
    "INT4_ASYM": Format("int4", "fp16", "int4_asym"),
}
# int4 is the Phi cookbook's symmetric recipe; int8 is NNCF's default mode.
PRECISION_ALIASES = {
    "fp32": "FP32",
    "fp16": "FP16",
    "int8": "INT8_ASYM",
    "int4": "INT4_SYM",
}

# The Phi cookbook's OpenVINO recipe: int4, group 128, ratio 0.6, symmetric.
# Data-aware modes are opt-in: they run the model over calibration text,
# which takes minutes even for the 135M demo.
INT4_DEFAULTS: dict[str, Any] = {
    "group_size": 128,
    "ratio": 0.6,
    "awq": False,
    "scale_estimation": False,
    "gptq": False,
    "calibration_text": None,
    "calibration_samples": 32,
    "calibration_tokens": 128,
}
DATA_AWARE_MODES = ("awq", "scale_estimation", "gptq")
CALIBRATION_OPTIONS = ("calibration_text", "calibration_samples", "calibration_tokens")
# Layers that are not int4 (the rest of `ratio`, embeddings, output layer).
BACKUP_MODE = "int8_asym"
# Adjusted group sizes stop here: smaller groups cost more scales than they save.
SMALLEST_GROUP_SIZE = 16
PER_CHANNEL = -1


@dataclass(frozen=True)
class Calibration:
    """Where calibration samples come from and how many are taken."""

    text_path: str | None  # None: phiquant's default evaluation text
    samples: int
    tokens_per_sample: int


@dataclass(frozen=True)
class CompressionSettings:
    """Everything NNCF is told for one target, as recorded in the manifest."""

    mode: str
    group_size: int | None = None
    requested_group_size: int | None = None
    ratio: float | None = None
    awq: bool = False
    scale_estimation: bool = False
    gptq: bool = False
    calibration: Calibration | None = None
    notes: list[str] = field(default_factory=list, compare=False)

    @property
    def is_int4(self) -> bool:
        return self.mode.startswith("int4")

    @property
    def data_aware(self) -> bool:
        return self.calibration is not None

    @property
    def sensitivity_metric(self) -> str | None:
        """How NNCF ranks layers for ``ratio``: by activations when it has data."""
        if not self.is_int4:
            return None
        if self.data_aware:
            return "max_activation_variance"
        return "weight_quantization_error"

    def as_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"nncf_mode": self.mode}
        if self.is_int4:
            options |= {
                "group_size": self.group_size,
                "requested_group_size": self.requested_group_size,
                "ratio": self.ratio,
                "backup_mode": BACKUP_MODE,
                # NNCF never puts the embedding and the last MatMul (the head,
                # the same tensor when tied) in int4; they take the backup mode.
                "embedding_and_head": BACKUP_MODE,
                "sensitivity_metric": self.sensitivity_metric,
                "awq": self.awq,
                "scale_estimation": self.scale_estimation,
                "gptq": self.gptq,
                "data_aware": self.data_aware,
            }
        else:
            options["group_size"] = PER_CHANNEL
        if self.calibration is not None:
            options["calibration"] = {
                "text": self.calibration.text_path or "phiquant default (WikiText-2)",
                "samples": self.calibration.samples,
                "tokens_per_sample": self.calibration.tokens_per_sample,
            }
        return options


def compression_settings(
    quant: str, options: dict[str, Any], traits: ModelTraits
) -> CompressionSettings | None:
    """Check a target's options; None for float formats, which compress nothing."""
    mode = FORMATS[quant].nncf_mode
    if mode is None or not mode.startswith("int4"):
        if options:
            raise UsageError(
                f"openvino:{quant} takes no options (got {', '.join(options)})",
                "Options such as group_size and ratio apply to openvino:INT4_SYM "
                "and openvino:INT4_ASYM",
            )
        return None if mode is None else CompressionSettings(mode=mode)

    unknown = sorted(set(options) - set(INT4_DEFAULTS))
    if unknown:
        raise UsageError(
            f"openvino:{quant} has no option {', '.join(unknown)}",
            f"Options: {', '.join(INT4_DEFAULTS)}",
        )
    values = {**INT4_DEFAULTS, **options}

    requested = _as_int("group_size", values["group_size"])
    if requested != PER_CHANNEL and requested < 1:
        raise UsageError(
            f"group_size must be positive or -1 (per channel), got {requested}",
            "Use a power of two such as 64 or 128",
        )
    group_size, notes = choose_group_size(requested, traits)

    ratio = _as_float("ratio", values["ratio"])
    if not 0 < ratio <= 1:
        raise UsageError(
            f"ratio must lie in (0, 1], got {ratio}",
            "ratio is the share of layers in int4; the rest stay int8",
        )

    modes = {name: _as_bool(name, values[name]) for name in DATA_AWARE_MODES}
    return CompressionSettings(
        mode=mode,
        group_size=group_size,
        requested_group_size=requested,
        ratio=ratio,
        calibration=_calibration(values, options, any(modes.values())),
        notes=notes,
        **modes,
    )


def reduction_widths(traits: ModelTraits) -> set[int]:
    """Input widths of the weights NNCF compresses: the axis groups split."""
    return {
        traits.hidden_size,  # qkv, gate_up, output layer, embeddings
        traits.num_heads * traits.head_dim,  # o_proj
        traits.intermediate_size,  # down_proj
    }


def choose_group_size(requested: int, traits: ModelTraits) -> tuple[int, list[str]]:
    """Keep ``requested`` if it divides every weight row, else a size that does.

    NNCF refuses a group size that does not divide a row (the demo's rows are
    576 wide, so the cookbook's 128 fails); the largest power of two below
    the request that divides them all is used instead, and a note says so.
    """
    widths = reduction_widths(traits)
    if requested == PER_CHANNEL or all(width % requested == 0 for width in widths):
        return requested, []
    shown = "/".join(str(width) for width in sorted(widths))
    candidate = 1 << (requested.bit_length() - 1)
    while candidate >= SMALLEST_GROUP_SIZE:
        if candidate < requested and all(width % candidate == 0 for width in widths):
            return candidate, [
                f"int4 group size {requested} does not divide the {shown}-wide weight "
                f"rows; used group size {candidate}"
            ]
        candidate //= 2
    return PER_CHANNEL, [
        f"no int4 group size from {requested} down to {SMALLEST_GROUP_SIZE} divides "
        f"the {shown}-wide weight rows; used per-channel scales"
    ]


def _calibration(
    values: dict[str, Any], given: dict[str, Any], data_aware: bool
) -> Calibration | None:
    if not data_aware:
        stray = [name for name in CALIBRATION_OPTIONS if name in given]
        if stray:
            raise UsageError(
                f"{', '.join(stray)} given, but no data-aware mode is on",
                "Add awq, scale_estimation or gptq, which use the calibration text",
            )
        return None
    text_path = values["calibration_text"]
    if text_path is not None:
        text_path = str(text_path)
        if not Path(text_path).is_file():
            raise UsageError(
                f"no calibration text file at {text_path}",
                "Pass a UTF-8 text file, or leave calibration_text unset for "
                "phiquant's default text",
            )
    samples = _as_int("calibration_samples", values["calibration_samples"])
    tokens = _as_int("calibration_tokens", values["calibration_tokens"])
    if samples < 1 or tokens < SMALLEST_GROUP_SIZE:
        raise UsageError(
            f"calibration needs at least 1 sample of at least {SMALLEST_GROUP_SIZE} "
            f"tokens, got {samples} of {tokens}",
            "Raise calibration_samples or calibration_tokens",
        )
    return Calibration(text_path, samples, tokens)


def _as_int(name: str, value: Any) -> int:
    refusal = UsageError(
        f"{name} must be a whole number, got {value!r}", f"Write e.g. {name}=64"
    )
    if isinstance(value, bool):
        raise refusal
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise refusal from None
    if not number.is_integer():
        raise refusal
    return int(number)


def _as_float(name: str, value: Any) -> float:
    refusal = UsageError(
        f"{name} must be a number, got {value!r}", f"Write e.g. {name}=0.8"
    )
    if isinstance(value, bool):
        raise refusal
    try:
        return float(value)
    except (TypeError, ValueError):
        raise refusal from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise UsageError(
        f"{name} must be true or false, got {value!r}", f"Write e.g. {name}=true"
    )
