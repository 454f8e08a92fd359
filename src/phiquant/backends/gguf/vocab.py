"""Tokenizer metadata for GGUF, read from a Hugging Face ``tokenizer.json``.

llama.cpp re-implements each tokenizer, so the GGUF must say which one
(``tokenizer.ggml.model``: ``gpt2`` for byte-level BPE, ``llama`` for
SentencePiece-style vocabularies such as Phi-3-mini's), which pre-tokenizer
regex (``tokenizer.ggml.pre``), and mark special tokens as CONTROL so chat
markers are parsed as one token and recognised as end of generation.
"""

from __future__ import annotations

import json
import re
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
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
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

    tokens, types = [], []
    for token_id in range(vocab_size):
        # Embedding rows past the tokenizer (padding) need placeholder tokens.
        text, kind = by_id.get(token_id, (f"[PAD{token_id}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    return tokens, types


def is_sentencepiece_style(tokenizer_json: dict[str, Any]) -> bool:
    """A Llama-style BPE (Phi-3-mini's): ▁ marks spaces, unknown bytes fall back."""
    model = tokenizer_json.get("model", {})
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _sentencepiece_tokens(
    tokenizer_json: dict[str, Any], vocab_size: int
) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types for llama.cpp's SentencePiece tokenizer.

    llama.cpp merges the adjacent pair whose joined piece scores highest.
    A BPE vocabulary lists pieces in the order their merges were learnt, so
    a score falling with the id reproduces the merge priority (checked on a
    probe text after every build).
    """
    model = tokenizer_json["model"]
    unknown = model.get("unk_token")
    by_id: dict[int, tuple[str, float, int]] = {}
    for text, token_id in model["vocab"].items():
        if _BYTE_TOKEN.fullmatch(text):
            kind = gguf.TokenType.BYTE
        elif text == unknown:
            kind = gguf.TokenType.UNKNOWN
        else:
            kind = gguf.TokenType.NORMAL
        by_id[token_id] = (text, -float(token_id), kind)
    for added in tokenizer_json.get("added_tokens", []):
        text = added["content"]
        if text == unknown:
            kind = gguf.TokenType.UNKNOWN
        elif added.get("special"):
            kind = gguf.TokenType.CONTROL
        else:
            kind = gguf.TokenType.USER_DEFINED
        by_id[int(added["id"])] = (text, 0.0, kind)

    tokens, scores, types = [], [], []
    for token_id in range(vocab_size):
        text, score, kind = by_id.get(
            token_id, (f"[PAD{token_id}]", -1e9, gguf.TokenType.UNUSED)
        )
        tokens.append(text)
        scores.append(score)
        types.append(int(kind))
    return tokens, scores, types


def _adds_space_prefix(tokenizer_json: dict[str, Any]) -> bool:
    """Whether the tokenizer puts ▁ before the first word, as SentencePiece does."""
    steps = [
        tokenizer_json.get("normalizer") or {},
        tokenizer_json.get("pre_tokenizer"),
    ]
    found = json.dumps([step for step in steps if step])
    return '"Prepend"' in found or (
        '"Metaspace"' in found and '"prepend_scheme": "never"' not in found
    )


def _adds_bos(source: ModelSource) -> bool:
    """Whether the source tokenizer starts every encoded text with BOS."""
    from tokenizers import Tokenizer

    configured = source.tokenizer_config.get("add_bos_token")
    if isinstance(configured, bool):
        return configured
    bos = source.traits.bos_token_id
    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    ids = tokenizer.encode("a", add_special_tokens=True).ids
    return bos is not None and bool(ids) and ids[0] == bos


def add_tokenizer(writer: gguf.GGUFWriter, source: ModelSource) -> dict[str, Any]:
    """Write the tokenizer and chat metadata; return what was chosen."""
    tokenizer_json = source.tokenizer_json
    model = tokenizer_json.get("model", {})
    is_byte_level = (
        model.get("type") == "BPE"
        and not model.get("byte_fallback", False)
        and (tokenizer_json.get("decoder") or {}).get("type") == "ByteLevel"
    )
    vocab_size = source.traits.vocab_size
    if is_byte_level:
        kind, pre = "gpt2", detect_pretokenizer(tokenizer_json)
        tokens, types = _byte_level_tokens(tokenizer_json, vocab_size)
        writer.add_tokenizer_model(kind)
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
    elif is_sentencepiece_style(tokenizer_json):
        kind, pre = "llama", "default"
        tokens, scores, types = _sentencepiece_tokens(tokenizer_json, vocab_size)
        writer.add_tokenizer_model(kind)
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer_json))
    else:
        raise SourceError(
            f"the GGUF backend cannot convert this {model.get('type', '?')} tokenizer",
            "Supported: byte-level BPE (GPT-2, o200k) and Llama-style BPE with "
            "byte fallback (SentencePiece)",
        )

    special = gguf.SpecialVocab(
        source.path, load_merges=kind == "gpt2", n_vocab=len(tokens)
    )
    # The chat template is taken from the source as a whole (standalone
    # chat_template.jinja included), not only from tokenizer_config.json.
    special.chat_template = source.chat_template
    # llama.cpp adds BOS to SentencePiece vocabularies unless told otherwise.
    special.add_special_token.setdefault("bos", _adds_bos(source))
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
        "tokenizer_model": kind,
        "tokenizer_pre": pre,
        "eos_token_id": eos_id,
        "eot_token_id": end_of_turn[1] if end_of_turn else None,
        "chat_template": bool(source.chat_template),
    }
