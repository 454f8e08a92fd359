"""Tokenizer metadata for GGUF, read from a Hugging Face ``tokenizer.json``.

llama.cpp re-implements each tokenizer, so the GGUF must say which one
(``tokenizer.ggml.model``), which pre-tokenizer regex (``tokenizer.ggml.pre``),
and mark special tokens as CONTROL so chat markers are parsed as one token and
recognised as end of generation.
"""

from __future__ import annotations

from typing import Any

import gguf

from phiquant.errors import SourceError
from phiquant.sources import ModelSource

# Pre-tokenizer pipelines of tokenizer.json, reduced to a fingerprint, and the
# llama.cpp pre-tokenizer that reproduces each one.
KNOWN_PRETOKENIZERS: dict[tuple[str, ...], str] = {
    # SmolLM/StarCoder: digits split one by one, then GPT-2 byte-level regex.
    ("Digits(individual)", "ByteLevel(regex)"): "smollm",
    # GPT-2 byte-level regex alone (phi-2).
    ("ByteLevel(regex)",): "phi-2",
}
# Phi-4-mini and other o200k tokenizers: one Split with this regex prefix.
_GPT4O_SPLIT_PREFIX = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"


def _step_fingerprint(step: dict[str, Any]) -> str:
    kind = step.get("type", "?")
    if kind == "Digits":
        return "Digits(individual)" if step.get("individual_digits") else "Digits"
    if kind == "ByteLevel":
        return "ByteLevel(regex)" if step.get("use_regex", True) else "ByteLevel"
    if kind == "Split":
        pattern = step.get("pattern", {})
        return f"Split({pattern.get('Regex', pattern.get('String', ''))})"
    return kind


def pretokenizer_fingerprint(tokenizer_json: dict[str, Any]) -> tuple[str, ...]:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return tuple(_step_fingerprint(step) for step in steps if step)


def detect_pretokenizer(tokenizer_json: dict[str, Any]) -> str:
    """The llama.cpp pre-tokenizer name for a byte-level BPE tokenizer."""
    fingerprint = pretokenizer_fingerprint(tokenizer_json)
    if fingerprint in KNOWN_PRETOKENIZERS:
        return KNOWN_PRETOKENIZERS[fingerprint]
    if fingerprint and fingerprint[0].startswith(f"Split({_GPT4O_SPLIT_PREFIX}"):
        return "gpt-4o"
    raise SourceError(
        f"unknown pre-tokenizer {' + '.join(fingerprint) or '(none)'} "
        "in tokenizer.json",
        "llama.cpp would split text differently from the original; this "
        "tokenizer is not supported by the GGUF backend yet",
    )


def _byte_level_tokens(
    tokenizer_json: dict[str, Any], vocab_size: int
) -> tuple[list[str], list[int]]:
    model = tokenizer_json["model"]
    by_id: dict[int, tuple[str, int]] = {
        token_id: (text, gguf.TokenType.NORMAL)
        for text, token_id in model["vocab"].items()
    }
    for added in tokenizer_json.get("added_tokens", []):
        kind = (
            gguf.TokenType.CONTROL
            if added.get("special")
            else gguf.TokenType.USER_DEFINED
        )
        by_id[int(added["id"])] = (added["content"], kind)

    if max(by_id) >= vocab_size:
        raise SourceError(
            f"tokenizer has ids up to {max(by_id)} but the model's vocab_size is "
            f"{vocab_size}",
            "The tokenizer does not belong to these weights",
        )
    tokens, types = [], []
    for token_id in range(vocab_size):
        # Embedding rows past the tokenizer (padding) need placeholder tokens.
        text, kind = by_id.get(token_id, (f"[PAD{token_id}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    return tokens, types


def add_tokenizer(writer: gguf.GGUFWriter, source: ModelSource) -> dict[str, Any]:
    """Write the tokenizer and chat metadata; return what was chosen."""
    tokenizer_json = source.tokenizer_json
    model = tokenizer_json.get("model", {})
    is_byte_level = (
        model.get("type") == "BPE"
        and not model.get("byte_fallback", False)
        and (tokenizer_json.get("decoder") or {}).get("type") == "ByteLevel"
    )
    if not is_byte_level:
        raise SourceError(
            f"the GGUF backend cannot convert {model.get('type', '?')} tokenizers "
            "with byte fallback yet",
            "Only byte-level BPE tokenizers (GPT-2 style) are supported for now",
        )

    pre = detect_pretokenizer(tokenizer_json)
    tokens, types = _byte_level_tokens(tokenizer_json, source.traits.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(source.path, load_merges=True, n_vocab=len(tokens))
    # The chat template is taken from the source as a whole (standalone
    # chat_template.jinja included), not only from tokenizer_config.json.
    special.chat_template = source.chat_template
    special.add_to_gguf(writer, quiet=True)

    # llama.cpp ends generation at EOS and EOT; a chat turn must end there too.
    end_of_turn = source.end_of_turn_token
    eos_id = special.special_token_ids.get("eos")
    if end_of_turn is not None:
        writer.add_eot_token_id(end_of_turn[1])
        if eos_id != end_of_turn[1]:
            # SpecialVocab already wrote the tokenizer's EOS; replace it so
            # plain completion also stops at the end of a turn.
            writer.kv_data[0].pop(gguf.Keys.Tokenizer.EOS_ID, None)
            writer.add_eos_token_id(end_of_turn[1])
            eos_id = end_of_turn[1]

    return {
        "tokenizer_model": "gpt2",
        "tokenizer_pre": pre,
        "eos_token_id": eos_id,
        "eot_token_id": end_of_turn[1] if end_of_turn else None,
        "chat_template": bool(source.chat_template),
    }
