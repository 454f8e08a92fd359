"""Tiny random-weight models built from the real Phi configs.

Hidden size, layers, heads and vocabulary shrink; everything that makes a
variant hard to convert stays: rope scaling and its factors, the rotary
fraction, the tied head, the sliding window and the token roles. The
windows and longrope switch points shrink too, so a sequence of a few
hundred tokens crosses them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import PHI_CONFIGS, WIKITEXT

HEADS, LAYERS = 4, 2
# Head sizes keep each variant's rotated part a multiple of 16 dimensions, as
# in the real models (Phi-4-mini rotates 96 of 128, phi-2 32 of 80): ONNX
# Runtime's attention kernel needs that.
HEAD_DIMS = {
    "Phi-3-mini-4k-instruct": 32,
    "Phi-3.5-mini-instruct": 32,
    "Phi-4-mini-instruct": 64,
    "phi-2": 80,
}
BASE_VOCAB = 320
# Sequence lengths the tiny variants switch behaviour at.
SLIDING_WINDOW = 191
LONGROPE_SWITCH = 256

# Per variant: KV heads and the context fields that shrink.
VARIANTS = {
    "Phi-3-mini-4k-instruct": {
        "num_key_value_heads": 4,
        "sliding_window": SLIDING_WINDOW,
        "max_position_embeddings": 512,
        "original_max_position_embeddings": 512,
    },
    "Phi-3.5-mini-instruct": {
        "num_key_value_heads": 4,
        "sliding_window": None,
        # The real ratio of 131072 / 4096 keeps longrope's attention factor.
        "max_position_embeddings": LONGROPE_SWITCH * 32,
        "original_max_position_embeddings": LONGROPE_SWITCH,
    },
    "Phi-4-mini-instruct": {
        "num_key_value_heads": 2,
        "sliding_window": None,
        "max_position_embeddings": LONGROPE_SWITCH * 32,
        "original_max_position_embeddings": LONGROPE_SWITCH,
    },
    # LayerNorm, biases, gelu_new, 40% rotary, untied head; no window or longrope.
    "phi-2": {"num_key_value_heads": 4, "max_position_embeddings": 512},
}

# The tokenizer kind of each real checkpoint: Phi-3(.5)-mini reuse Llama's
# SentencePiece vocabulary, Phi-4-mini an o200k byte-level BPE, phi-2 GPT-2's.
TOKENIZER_KINDS = {
    "Phi-3-mini-4k-instruct": "sentencepiece",
    "Phi-3.5-mini-instruct": "sentencepiece",
    "Phi-4-mini-instruct": "o200k",
    "phi-2": "gpt2",
}

# phi-2 ships no chat template: its CodeGen tokenizer uses one token for all roles.
PHI2_TOKENIZER_CONFIG = {
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


def _special_tokens(tokenizer_config: dict) -> list[str]:
    """Role tokens of the config and every <|...|> marker of its chat template."""
    import re

    roles = [
        tokenizer_config[key]
        for key in ("bos_token", "eos_token", "unk_token", "pad_token")
        if tokenizer_config.get(key)
    ]
    if tokenizer_config.get("bos_token") == "<s>":
        roles.append("</s>")  # Llama-style vocabularies have it; llama.cpp expects it
    markers = re.findall(r"<\|[^|'\"]+\|>", tokenizer_config.get("chat_template", ""))
    if "'<|' + message['role'] + '|>'" in tokenizer_config.get("chat_template", ""):
        markers += ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
    return list(dict.fromkeys(roles + markers))


# The o200k pre-tokenizer regex of Phi-4-mini's tokenizer.json (GPT-4o's).
O200K_REGEX = (
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
SPM_SPECIALS = ["<unk>", "<s>", "</s>"]


def _training_text() -> list[str]:
    return WIKITEXT.read_text("utf-8")[:200_000].splitlines()


def _byte_level_tokenizer(kind: str):
    """GPT-2 style byte-level BPE; ``o200k`` splits words with Phi-4-mini's regex."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if kind == "o200k":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(O200K_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_text(), trainer=trainer)
    return tokenizer


def _sentencepiece_tokenizer():
    """Llama-style BPE as in Phi-3-mini's tokenizer.json: ▁ for spaces, byte fallback.

    <unk>, <s>, </s> take ids 0-2 and the 256 byte tokens 3-258, like the
    real vocabulary; merges learnt on WikiText, digits kept apart, follow.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    # Llama's SentencePiece model splits digits, so no piece joins ▁ and a digit.
    learner.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(prepend_scheme="always"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB, special_tokens=SPM_SPECIALS, show_progress=False
    )
    learner.train_from_iterator(_training_text(), trainer=trainer)
    learnt = json.loads(learner.to_str())["model"]

    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    ordered = sorted(learnt["vocab"].items(), key=lambda item: item[1])
    pieces = [text for text, _ in ordered if text not in SPM_SPECIALS]
    vocab = {
        text: index for index, text in enumerate(SPM_SPECIALS + byte_tokens + pieces)
    }
    merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" "))
        for merge in learnt["merges"]
    ]
    tokenizer = Tokenizer(
        models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return tokenizer


def _train_tokenizer(kind: str, specials: list[str]):
    """A BPE of about BASE_VOCAB tokens trained on WikiText, plus ``specials``."""
    if kind == "sentencepiece":
        tokenizer = _sentencepiece_tokenizer()
    else:
        tokenizer = _byte_level_tokenizer(kind)
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _token_id(tokenizer, text: str | None) -> int | None:
    return tokenizer.token_to_id(text) if text else None


def _shrunk_factors(factors: list[float], pairs: int) -> list[float]:
    step = len(factors) / pairs
    return [factors[int(i * step)] for i in range(pairs)]


def build_tiny_model(name: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny bf16 checkpoint of variant ``name`` into ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    config = json.loads((PHI_CONFIGS / f"{name}.config.json").read_text())
    tokenizer_file = PHI_CONFIGS / f"{name}.tokenizer_config.subset.json"
    tokenizer_config = (
        json.loads(tokenizer_file.read_text())
        if tokenizer_file.exists()
        else PHI2_TOKENIZER_CONFIG
    )
    specials = _special_tokens(tokenizer_config)
    backend = _train_tokenizer(TOKENIZER_KINDS[name], specials)
    vocab = -(-backend.get_vocab_size() // 64) * 64  # padded like real checkpoints

    config.pop("auto_map", None)
    config.update(VARIANTS[name])
    head_dim = HEAD_DIMS[name]
    config.update(
        hidden_size=HEADS * head_dim,
        num_attention_heads=HEADS,
        num_hidden_layers=LAYERS,
        intermediate_size=2 * HEADS * head_dim,
        vocab_size=vocab,
        initializer_range=0.1,  # confident logits, so top-1 comparisons mean something
        bos_token_id=backend.token_to_id(tokenizer_config["bos_token"]),
        eos_token_id=backend.token_to_id(tokenizer_config["eos_token"]),
        pad_token_id=_token_id(backend, tokenizer_config.get("pad_token")),
    )
    if config.get("rope_scaling"):
        pairs = int(head_dim * config.get("partial_rotary_factor", 1.0)) // 2
        for key in ("short_factor", "long_factor"):
            config["rope_scaling"][key] = _shrunk_factors(
                config["rope_scaling"][key], pairs
            )

    torch.manual_seed(seed)
    model_config = AutoConfig.for_model(config.pop("model_type"), **config)
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(folder)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer_config["bos_token"],
        eos_token=tokenizer_config["eos_token"],
        unk_token=tokenizer_config["unk_token"],
        pad_token=tokenizer_config.get("pad_token"),
        chat_template=tokenizer_config.get("chat_template"),
    )
    tokenizer.save_pretrained(folder)
    end = backend.token_to_id("<|end|>")
    stops = [end, config["eos_token_id"]] if end is not None else config["eos_token_id"]
    generation = {"eos_token_id": stops, "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder
