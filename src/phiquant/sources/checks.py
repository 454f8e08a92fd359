"""Consistency checks on a checkpoint before any converter reads it.

A config that contradicts itself or its weights does not fail where it is
wrong: converters write an artifact whose runtime then aborts (llama.cpp
stops the process on mismatched shapes) or loads garbage. Such sources are
refused up front, naming the field to fix.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from phiquant.errors import SourceError
from phiquant.families import Family
from phiquant.sources.config import ModelTraits

if TYPE_CHECKING:
    from phiquant.sources.model import ModelSource

_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_RESTORE = "Restore the original config.json from the model's repository"


def check_config_values(traits: ModelTraits) -> None:
    """Refuse sizes that no model can have and settings that contradict each other."""
    sizes = {
        "hidden_size": traits.hidden_size,
        "num_hidden_layers": traits.num_layers,
        "num_attention_heads": traits.num_heads,
        "num_key_value_heads": traits.num_kv_heads,
        "head_dim": traits.head_dim,
        "intermediate_size": traits.intermediate_size,
        "vocab_size": traits.vocab_size,
        "max_position_embeddings": traits.max_position_embeddings,
    }
    for name, value in sizes.items():
        if value < 1:
            raise SourceError(
                f"config.json has {name} = {value}, not a positive size", _RESTORE
            )
    if traits.num_heads % traits.num_kv_heads:
        raise SourceError(
            f"config.json has {traits.num_heads} attention heads, not a multiple "
            f"of its {traits.num_kv_heads} key/value heads",
            _RESTORE,
        )
    if not 0 < traits.partial_rotary_factor <= 1:
        raise SourceError(
            f"config.json has partial_rotary_factor = "
            f"{traits.partial_rotary_factor}; the rotated share of a head must "
            "lie in (0, 1]",
            _RESTORE,
        )
    if traits.rotary_dim % 2:
        raise SourceError(
            f"config.json rotates {traits.rotary_dim} of {traits.head_dim} "
            "dimensions per head; rotary embeddings rotate pairs, so it must be even",
            _RESTORE,
        )
    if traits.rope.kind == "longrope":
        _check_longrope_factors(traits)


def _check_longrope_factors(traits: ModelTraits) -> None:
    pairs = traits.rotary_dim // 2
    for name, factors in (
        ("short_factor", traits.rope.short_factor),
        ("long_factor", traits.rope.long_factor),
    ):
        if factors is None or len(factors) != pairs:
            found = "none" if factors is None else len(factors)
            raise SourceError(
                f"config.json's longrope scaling needs {pairs} {name} values "
                f"(one per rotated pair), found {found}",
                _RESTORE,
            )


def check_weights_match_config(
    traits: ModelTraits, family: Family, shapes: dict[str, list[int]]
) -> None:
    """Refuse weights whose layer count or matrix shapes disagree with the config.

    ``shapes`` maps each tensor name to its shape, as the safetensors headers
    state it.
    """
    layers: dict[int, dict[str, list[int]]] = {}
    for name, shape in shapes.items():
        match = _LAYER_NAME.match(name)
        if match:
            layers.setdefault(int(match.group(1)), {})[match.group(2)] = shape
    if sorted(layers) != list(range(traits.num_layers)):
        raise SourceError(
            f"config.json says num_hidden_layers = {traits.num_layers}, but the "
            f"weights hold {len(layers)} layers",
            "Use the config.json that came with these weights",
        )

    sizes = _named_sizes(traits)
    expected = {"model.embed_tokens.weight": [traits.vocab_size, traits.hidden_size]}
    if "lm_head.weight" in shapes:
        expected["lm_head.weight"] = [traits.vocab_size, traits.hidden_size]
    for index in range(traits.num_layers):
        for suffix, rows, columns in family.layer_shapes:
            name = f"model.layers.{index}.{suffix}"
            expected[name] = [sizes[rows], sizes[columns]]
    for name, shape in expected.items():
        if name in shapes and list(shapes[name]) != shape:
            raise SourceError(
                f"{name} is {_shape(shapes[name])} but config.json implies "
                f"{_shape(shape)} ({_implied_by(name, traits)})",
                "Use the config.json that came with these weights",
            )


def _named_sizes(traits: ModelTraits) -> dict[str, int]:
    q = traits.num_heads * traits.head_dim
    kv = traits.num_kv_heads * traits.head_dim
    return {
        "hidden": traits.hidden_size,
        "q": q,
        "kv": kv,
        "qkv": q + 2 * kv,
        "ffn": traits.intermediate_size,
        "ffn2": 2 * traits.intermediate_size,
    }


def _shape(shape: Any) -> str:
    return " x ".join(str(dim) for dim in shape)


def _implied_by(name: str, traits: ModelTraits) -> str:
    if "embed" in name or "lm_head" in name:
        return f"vocab_size {traits.vocab_size}, hidden_size {traits.hidden_size}"
    if "mlp" in name:
        return (
            f"hidden_size {traits.hidden_size}, intermediate_size "
            f"{traits.intermediate_size}"
        )
    return (
        f"hidden_size {traits.hidden_size}, {traits.num_heads} heads and "
        f"{traits.num_kv_heads} key/value heads of {traits.head_dim}"
    )


def check_tokenizer_files(source: ModelSource) -> None:
    """Refuse tokenizer files that would break a conversion or a chat.

    That is: files that are not JSON objects, token ids past the model's
    vocabulary, and a chat template that fails on a one-message chat.
    """
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        path = source.path / name
        if not path.exists():
            continue
        try:
            settings = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            settings = error
        if not isinstance(settings, dict):
            raise SourceError(
                f"{path} is malformed ({_why_not_an_object(settings)})",
                "Copy it again from the model's repository",
            )

    if not isinstance(source.tokenizer_json.get("model"), dict):
        raise SourceError(
            f"{source.path / 'tokenizer.json'} holds no tokenizer model",
            "Copy it again from the model's repository",
        )
    largest = _largest_token_id(source.tokenizer_json)
    if largest is not None and largest >= source.traits.vocab_size:
        raise SourceError(
            f"tokenizer.json has token ids up to {largest}, but config.json's "
            f"vocab_size is {source.traits.vocab_size}",
            "The tokenizer does not belong to these weights; copy the model's own",
        )
    if source.chat_template is not None:
        _check_template_renders(source)


def _why_not_an_object(settings: Any) -> str:
    if isinstance(settings, Exception):
        return str(settings)
    return f"a JSON {type(settings).__name__}, not an object"


def _largest_token_id(tokenizer_json: dict[str, Any]) -> int | None:
    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else []
    if isinstance(vocab, list):  # Unigram: [piece, score] pairs, id = position
        ids.append(len(vocab) - 1)
    ids += [t["id"] for t in tokenizer_json.get("added_tokens", []) if "id" in t]
    numbers = [i for i in ids if isinstance(i, int)]
    return max(numbers) if numbers else None


def _check_template_renders(source: ModelSource) -> None:
    """Render the chat template as transformers does, on one user message."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    special_tokens = {
        key: value.get("content") if isinstance(value, dict) else value
        for key, value in source.tokenizer_config.items()
        if key.endswith("_token")
    }
    try:
        environment.from_string(source.chat_template).render(
            messages=[{"role": "user", "content": "Hello"}],
            add_generation_prompt=True,
            **special_tokens,
        )
    except jinja2.TemplateError as error:
        raise SourceError(
            f"the chat template fails on a one-message chat ({error})",
            "Restore the model's original chat template (tokenizer_config.json or "
            "chat_template.jinja)",
        ) from error
