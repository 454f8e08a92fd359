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


def topk_kld(
    top_ids: np.ndarray, top_logprobs: np.ndarray, test_logprobs: np.ndarray
) -> np.ndarray:
    """KL(reference || test) per row from the reference's top-k tokens.

    The reference mass outside its top-k tokens is compared with the test's
    mass outside the same tokens as one bucket. Merging outcomes never raises
    a KL divergence, so this is a lower bound of the exact value, equal to it
    when the two distributions agree outside the top-k.
    """
    ref_log = top_logprobs.astype(np.float64)
    test_log = np.take_along_axis(test_logprobs, top_ids.astype(np.int64), axis=-1)
    ref_p, test_p = np.exp(ref_log), np.exp(test_log)
    top_part = (ref_p * (ref_log - test_log)).sum(axis=-1)

    ref_rest = np.clip(1.0 - ref_p.sum(axis=-1), 0.0, 1.0)
    test_rest = np.clip(1.0 - test_p.sum(axis=-1), 1e-300, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rest_part = np.where(
            ref_rest > 0, ref_rest * (np.log(ref_rest) - np.log(test_rest)), 0.0
        )
    return top_part + rest_part


@dataclass
class WindowScores:
    """Per-position results of one artifact on one reference window."""

    kld: np.ndarray
    top1_match: np.ndarray
    test_nll: np.ndarray
    reference_nll: np.ndarray


def score_window(reference, logits: np.ndarray) -> WindowScores:
    """Score an artifact's full-window logits against a ``WindowReference``."""
    rows = reference.rows
    test_log = log_softmax(logits[reference.first : reference.first + rows])
    if not np.isfinite(test_log).all():
        raise FloatingPointError("the artifact produced NaN or infinite logits")
    targets = reference.tokens[reference.first + 1 :]
    return WindowScores(
        kld=topk_kld(reference.top_ids, reference.top_logprobs, test_log),
        top1_match=test_log.argmax(axis=-1) == reference.top_ids[:, 0],
        test_nll=-test_log[np.arange(rows), targets],
        reference_nll=-reference.target_logprobs.astype(np.float64),
    )


def summarise(scores: list[WindowScores]) -> dict[str, float]:
    """Pool per-position results over windows into the reported figures."""
    kld = np.concatenate([s.kld for s in scores])
    test_nll = np.concatenate([s.test_nll for s in scores])
    reference_nll = np.concatenate([s.reference_nll for s in scores])
    ppl, ref_ppl = float(np.exp(test_nll.mean())), float(np.exp(reference_nll.mean()))
    return {
        "positions": int(len(kld)),
        "kld_mean": float(kld.mean()),
        "kld_p99": float(np.percentile(kld, 99)),
        "kld_max": float(kld.max()),
        "top1_agreement": float(np.concatenate([s.top1_match for s in scores]).mean()),
        "perplexity": ppl,
        "reference_perplexity": ref_ppl,
        "delta_perplexity": ppl - ref_ppl,
    }
