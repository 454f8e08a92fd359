"""Read a Hugging Face ``config.json`` the same way whatever wrote it.

transformers 4 wrote ``rope_theta`` and ``rope_scaling``; transformers 5 writes
``rope_parameters``; early Phi-3-128k checkpoints call longrope ``su``. The
runtimes phiquant feeds (llama.cpp, ONNX Runtime GenAI's builder, mlx-lm) read
the older spelling, so the normalised config uses it throughout.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

# Old names of rope kinds, mapped to what current runtimes call them.
_ROPE_KIND_ALIASES = {"su": "longrope", "default": "default", None: "default"}


@dataclass(frozen=True)
class RopeScaling:
    """How rotary position embeddings are stretched past the trained length."""

    kind: str
    factor: float | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    attention_factor: float | None = None


@dataclass(frozen=True)
class ModelTraits:
    """The facts about a checkpoint that decide how to convert it faithfully."""

    architecture: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    original_max_position_embeddings: int
    rope_theta: float
    rope: RopeScaling
    partial_rotary_factor: float
    sliding_window: int | None
    tie_word_embeddings: bool
    norm_eps: float
    hidden_act: str
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    dtype: str

    @property
    def rotary_dim(self) -> int:
        """How many of each head's dimensions are rotated (Phi-4-mini: 96 of 128)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def longrope_switch_tokens(self) -> int | None:
        """Sequence length past which longrope switches to its long factors."""
        if self.rope.kind != "longrope":
            return None
        return self.original_max_position_embeddings

    def kv_cache_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """Keys and values stored per token of context, over all layers."""
        return self.num_layers * self.num_kv_heads * self.head_dim * 2 * bytes_per_value


# Fields transformers 5 moves into rope_parameters that runtimes read at top level.
_TOP_LEVEL_ROPE_FIELDS = ("partial_rotary_factor", "original_max_position_embeddings")


def _rope_settings(config: dict[str, Any]) -> tuple[float, dict | None, dict]:
    """Return (theta, legacy rope_scaling or None, fields to lift to top level)."""
    parameters = config.get("rope_parameters")
    if isinstance(parameters, dict) and "rope_theta" in parameters:
        theta = float(parameters["rope_theta"])
        kind = parameters.get("rope_type", parameters.get("type"))
        extra = dict(parameters)
    else:
        theta = float(config.get("rope_theta", 10000.0))
        extra = dict(config.get("rope_scaling") or {})
        kind = extra.get("rope_type", extra.get("type"))

    for key in ("rope_theta", "rope_type", "type"):
        extra.pop(key, None)
    lifted = {key: extra.pop(key) for key in _TOP_LEVEL_ROPE_FIELDS if key in extra}

    kind = _ROPE_KIND_ALIASES.get(kind, kind)
    if kind == "default":
        return theta, None, lifted
    return theta, {"type": kind, "rope_type": kind, **extra}, lifted


def normalise_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` in the spelling every runtime reads correctly.

    - rope settings as top-level ``rope_theta`` plus ``rope_scaling`` (or null),
      with ``su`` renamed ``longrope`` and both ``type`` and ``rope_type`` set;
    - ``original_max_position_embeddings`` stated explicitly, because
      transformers 5 otherwise fills in 4096 and makes some builders switch to
      longrope on models that have none;
    - ``head_dim`` and ``partial_rotary_factor`` stated explicitly;
    - no ``auto_map``: every supported architecture is built into the
      libraries, and code from a model folder is never run.
    """
    config = copy.deepcopy(raw)
    config.pop("auto_map", None)
    theta, scaling, lifted = _rope_settings(config)
    config.pop("rope_parameters", None)
    config["rope_theta"] = theta
    config["rope_scaling"] = scaling
    for key, value in lifted.items():
        config.setdefault(key, value)
    config.setdefault(
        "original_max_position_embeddings", config.get("max_position_embeddings")
    )

    heads = config.get("num_attention_heads")
    if heads and not config.get("head_dim"):
        config["head_dim"] = config["hidden_size"] // heads
    config.setdefault("num_key_value_heads", heads)
    config.setdefault("partial_rotary_factor", 1.0)
    return config


def _as_tuple(values: Any) -> tuple[float, ...] | None:
    return tuple(float(v) for v in values) if values else None


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    return (int(value),)


def _number(config: dict[str, Any], name: str, kind: type) -> Any:
    """A numeric field; KeyError names a missing one, ValueError a wrong one."""
    if config.get(name) is None:
        raise KeyError(name)
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is {value!r}, not a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} is {value!r}, not a whole number")
    return kind(value)


def traits_from_config(config: dict[str, Any]) -> ModelTraits:
    """Read the conversion-relevant traits from a normalised config."""
    scaling = config.get("rope_scaling") or {}
    rope = RopeScaling(
        kind=scaling.get("type", "default"),
        factor=scaling.get("factor"),
        short_factor=_as_tuple(scaling.get("short_factor")),
        long_factor=_as_tuple(scaling.get("long_factor")),
        attention_factor=scaling.get("attention_factor"),
    )
    architectures = config.get("architectures") or [config.get("model_type", "?")]
    norm_eps = config.get("rms_norm_eps", config.get("layer_norm_eps", 1e-5))
    return ModelTraits(
        architecture=architectures[0],
        model_type=config.get("model_type", "?"),
        hidden_size=_number(config, "hidden_size", int),
        num_layers=_number(config, "num_hidden_layers", int),
        num_heads=_number(config, "num_attention_heads", int),
        num_kv_heads=_number(config, "num_key_value_heads", int),
        head_dim=_number(config, "head_dim", int),
        intermediate_size=_number(config, "intermediate_size", int),
        vocab_size=_number(config, "vocab_size", int),
        max_position_embeddings=_number(config, "max_position_embeddings", int),
        original_max_position_embeddings=_number(
            config, "original_max_position_embeddings", int
        ),
        rope_theta=_number(config, "rope_theta", float),
        rope=rope,
        partial_rotary_factor=_number(config, "partial_rotary_factor", float),
        sliding_window=config.get("sliding_window"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        norm_eps=float(norm_eps),
        hidden_act=config.get("hidden_act", config.get("hidden_activation", "?")),
        bos_token_id=config.get("bos_token_id"),
        eos_token_ids=_token_ids(config.get("eos_token_id")),
        dtype=str(config.get("torch_dtype") or config.get("dtype") or "float32"),
    )
