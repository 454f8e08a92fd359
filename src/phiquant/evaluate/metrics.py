"""Quality metrics of an artifact's logits against reference logits.

KL divergence is KL(reference || artifact) per position, in nats, as
llama.cpp's perplexity tool reports it. Perplexity uses the next token of the
window as the label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Comparison:
    """How an artifact's predictions differ from the reference's."""

    positions: int
    kld_mean: float
    kld_p99: float
    kld_max: float
    top1_agreement: float
    perplexity: float
    reference_perplexity: float

    @property
    def delta_perplexity(self) -> float:
        return self.perplexity - self.reference_perplexity

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "delta_perplexity": self.delta_perplexity}


def per_position_kld(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """KL(reference || test) for each row of two [positions, vocab] logit arrays."""
    if reference.shape != test.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {test.shape}")
    ref_log = log_softmax(reference)
    test_log = log_softmax(test)
    return (np.exp(ref_log) * (ref_log - test_log)).sum(axis=-1)


def perplexity(logits: np.ndarray, next_tokens: np.ndarray) -> float:
    """exp of the mean negative log-likelihood of ``next_tokens``."""
    log_probs = log_softmax(logits)
    picked = log_probs[np.arange(len(next_tokens)), next_tokens]
    return float(np.exp(-picked.mean()))


def compare(
    reference: np.ndarray, test: np.ndarray, token_ids: list[int] | np.ndarray
) -> Comparison:
    """Compare logits of one window; position i predicts ``token_ids[i + 1]``."""
    tokens = np.asarray(token_ids)
    reference, test = reference[: len(tokens) - 1], test[: len(tokens) - 1]
    kld = per_position_kld(reference, test)
    next_tokens = tokens[1:]
    return Comparison(
        positions=len(kld),
        kld_mean=float(kld.mean()),
        kld_p99=float(np.percentile(kld, 99)),
        kld_max=float(kld.max()),
        top1_agreement=float((reference.argmax(-1) == test.argmax(-1)).mean()),
        perplexity=perplexity(test, next_tokens),
        reference_perplexity=perplexity(reference, next_tokens),
    )
