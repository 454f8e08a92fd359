"""Reference logits: the source model in fp32 through transformers."""

from __future__ import annotations

import numpy as np

from phiquant.sources import ModelSource


class TransformersReference:
    """The source checkpoint loaded in fp32, scoring token windows."""

    def __init__(self, source: ModelSource) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=torch.float32, trust_remote_code=False
        ).eval()

    def score(self, token_ids: list[int]) -> np.ndarray:
        """Logits for every position: float32 [len, vocab]."""
        with self._torch.inference_mode():
            ids = self._torch.tensor([token_ids])
            return self.model(ids).logits[0].float().numpy()


def source_tokenizer(source: ModelSource):
    """The source's own tokenizer (tokenizer.json), as the reference reads text."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(source.path / "tokenizer.json"))


def tokenize_text(source: ModelSource, text: str) -> list[int]:
    return source_tokenizer(source).encode(text, add_special_tokens=False).ids
