"""The config.json and generation_config.json an MLX artifact needs to run right.

mlx-lm writes back the config it read, so three things need fixing after it:

- its model classes read only a top-level ``rope_theta`` and a
  ``rope_scaling`` with a ``type`` key (plus ``original_max_position_embeddings``
  and ``partial_rotary_factor`` at top level); a transformers 5 config
  (``rope_parameters``) would silently run with theta 10000;
- the dtype field keeps the source's value even when the tensors were cast
  (``--dtype float16`` on a bf16 source still says bfloat16);
- ``mlx_lm.load`` stops at the ids in generation_config.json's
  ``eos_token_id`` (or config.json's when that is absent). Phi-3's lists only
  ``<|endoftext|>`` while chat turns end with ``<|end|>``, so replies never
  stopped (mlx-examples issue 780).
"""

from __future__ import annotations

from typing import Any

# Fields the runtime's model classes read for positions, from the normalised config.
ROPE_FIELDS = (
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "original_max_position_embeddings",
    "max_position_embeddings",
)
DTYPE_FIELDS = ("torch_dtype", "dtype")


def runtime_config(
    written: dict[str, Any],
    normalised: dict[str, Any],
    *,
    float_dtype: str,
    stop_token_ids: list[int],
) -> dict[str, Any]:
    """mlx-lm's ``written`` config with rope, dtype and stop tokens made true."""
    config = dict(written)
    config.pop("rope_parameters", None)
    for key in ROPE_FIELDS:
        if key in normalised:
            config[key] = normalised[key]
    for key in DTYPE_FIELDS:
        if key in config or key == "torch_dtype":
            config[key] = float_dtype
    config["eos_token_id"] = list(stop_token_ids)
    return dict(sorted(config.items()))


def runtime_generation_config(
    written: dict[str, Any] | None, *, stop_token_ids: list[int]
) -> dict[str, Any]:
    """The source's generation config with every stop token as ``eos_token_id``."""
    config = dict(written or {})
    config["eos_token_id"] = list(stop_token_ids)
    return config
