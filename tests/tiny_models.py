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

HIDDEN, HEADS, LAYERS, INTERMEDIATE = 128, 4, 2, 256
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


def _train_tokenizer(specials: list[str]):
    """A byte-level BPE of BASE_VOCAB tokens trained on WikiText, plus specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = WIKITEXT.read_text("utf-8")[:200_000]
    tokenizer.train_from_iterator([text], trainer=trainer)
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _shrunk_factors(factors: list[float], pairs: int) -> list[float]:
    step = len(factors) / pairs
    return [factors[int(i * step)] for i in range(pairs)]


def build_tiny_model(name: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny bf16 checkpoint of variant ``name`` into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, Phi3Config, PreTrainedTokenizerFast

    config = json.loads((PHI_CONFIGS / f"{name}.config.json").read_text())
    tokenizer_config = json.loads(
        (PHI_CONFIGS / f"{name}.tokenizer_config.subset.json").read_text()
    )
    specials = _special_tokens(tokenizer_config)
    backend = _train_tokenizer(specials)
    vocab = -(-backend.get_vocab_size() // 64) * 64  # padded like real checkpoints

    config.pop("auto_map", None)
    config.update(VARIANTS[name])
    head_dim = HIDDEN // HEADS
    config.update(
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_hidden_layers=LAYERS,
        intermediate_size=INTERMEDIATE,
        vocab_size=vocab,
        initializer_range=0.1,  # confident logits, so top-1 comparisons mean something
        bos_token_id=backend.token_to_id(tokenizer_config["bos_token"]),
        eos_token_id=backend.token_to_id(tokenizer_config["eos_token"]),
        pad_token_id=backend.token_to_id(tokenizer_config["pad_token"]),
    )
    if config.get("rope_scaling"):
        pairs = int(head_dim * config.get("partial_rotary_factor", 1.0)) // 2
        for key in ("short_factor", "long_factor"):
            config["rope_scaling"][key] = _shrunk_factors(
                config["rope_scaling"][key], pairs
            )

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(Phi3Config(**config), dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(folder)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer_config["bos_token"],
        eos_token=tokenizer_config["eos_token"],
        unk_token=tokenizer_config["unk_token"],
        pad_token=tokenizer_config["pad_token"],
        chat_template=tokenizer_config["chat_template"],
    )
    tokenizer.save_pretrained(folder)
    end = backend.token_to_id("<|end|>")
    generation = {"eos_token_id": [end, config["eos_token_id"]], "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder
