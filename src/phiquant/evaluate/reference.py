"""Reference predictions: the source model in fp32 through transformers.

Full reference logits would take ``positions x vocabulary x 4`` bytes (3 GB
for 4k scored positions of a 200k vocabulary), so only what the metrics need
is kept, per scored position: the ``top_k`` most likely tokens with their
log-probabilities and the log-probability of the actual next token (8 KB per
position, 32 MB for the default 16 x 256 scored positions). KL divergence is
then computed over those tokens plus one bucket for all the others (see
``metrics.topk_kld``): exact when the two models agree, otherwise a slight
underestimate. On the demo, top-1024 gave 96-97% of the exact mean KLD for
F16, Q8_0 and Q4_K_M GGUFs (top-256: 89-91%). Results are cached on disk by
content.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phiquant.cache import cache_root
from phiquant.evaluate.metrics import log_softmax
from phiquant.sources import ModelSource

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 1024
# Bump when what is stored changes, so old cache entries are not reused.
CACHE_FORMAT = 1


@dataclass
class WindowReference:
    """Reference predictions on the scored positions of one token window.

    Row ``r`` is the prediction made at window position ``first + r`` for the
    token at ``first + r + 1``.
    """

    tokens: np.ndarray  # int64 [window]
    first: int
    top_ids: np.ndarray  # int32 [rows, top_k], most likely first
    top_logprobs: np.ndarray  # float32 [rows, top_k]
    target_logprobs: np.ndarray  # float32 [rows]

    @property
    def rows(self) -> int:
        return len(self.target_logprobs)


def summarise_logits(
    tokens: list[int], logits: np.ndarray, first: int, top_k: int = DEFAULT_TOP_K
) -> WindowReference:
    """Keep what the metrics need of full logits, from position ``first`` on."""
    token_array = np.asarray(tokens, dtype=np.int64)
    log_probs = log_softmax(logits[first : len(tokens) - 1])
    top_k = min(top_k, log_probs.shape[-1])
    top_ids = np.argpartition(-log_probs, top_k - 1, axis=-1)[:, :top_k]
    top_values = np.take_along_axis(log_probs, top_ids, axis=-1)
    order = np.argsort(-top_values, axis=-1)
    targets = token_array[first + 1 :]
    return WindowReference(
        tokens=token_array,
        first=first,
        top_ids=np.take_along_axis(top_ids, order, axis=-1).astype(np.int32),
        top_logprobs=np.take_along_axis(top_values, order, axis=-1).astype(np.float32),
        target_logprobs=log_probs[np.arange(len(targets)), targets].astype(np.float32),
    )


class TransformersReference:
    """The source checkpoint loaded in fp32, scoring token windows."""

    def __init__(self, source: ModelSource) -> None:
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
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


def _cache_path(
    source: ModelSource, windows: list[list[int]], first: int, top_k: int
) -> Path:
    key = json.dumps(
        {
            "format": CACHE_FORMAT,
            "source": source.content_hash,
            "tokens": hashlib.sha256(
                np.asarray(windows, np.int64).tobytes()
            ).hexdigest(),
            "first": first,
            "top_k": top_k,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return cache_root() / "reference" / f"{digest}.npz"


def _save(path: Path, references: list[WindowReference]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for index, ref in enumerate(references):
        arrays[f"tokens_{index}"] = ref.tokens
        arrays[f"top_ids_{index}"] = ref.top_ids
        arrays[f"top_logprobs_{index}"] = ref.top_logprobs
        arrays[f"target_logprobs_{index}"] = ref.target_logprobs
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, count=len(references), **arrays)
    partial.replace(path)


def _load(path: Path, first: int) -> list[WindowReference]:
    with np.load(path) as data:
        return [
            WindowReference(
                tokens=data[f"tokens_{i}"],
                first=first,
                top_ids=data[f"top_ids_{i}"],
                top_logprobs=data[f"top_logprobs_{i}"],
                target_logprobs=data[f"target_logprobs_{i}"],
            )
            for i in range(int(data["count"]))
        ]


def reference_predictions(
    source: ModelSource,
    windows: list[list[int]],
    first: int,
    top_k: int = DEFAULT_TOP_K,
    progress=None,
) -> list[WindowReference]:
    """Reference predictions for each window, from the disk cache when present."""
    path = _cache_path(source, windows, first, top_k)
    if path.exists():
        log.info("reference predictions from cache %s", path)
        return _load(path, first)

    model = TransformersReference(source)
    references = []
    for index, window in enumerate(windows):
        if progress:
            progress(index, len(windows), "reference (transformers fp32)")
        references.append(summarise_logits(window, model.score(window), first, top_k))
    _save(path, references)
    return references
