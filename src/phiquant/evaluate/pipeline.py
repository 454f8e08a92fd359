"""Score artifacts against one reference on the same token windows.

Quality follows llama.cpp's perplexity tool: the text is cut into windows of
``window_tokens`` and only the second half of each window is scored, so every
scored token has at least half a window of context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phiquant.artifacts import (
    MANIFEST_NAME,
    library_versions,
    read_manifest,
    sha256_file,
)
from phiquant.backends.base import ProgressFn, no_progress
from phiquant.errors import PhiquantError, UsageError
from phiquant.evaluate import metrics
from phiquant.evaluate.reference import reference_predictions, tokenize_text
from phiquant.evaluate.results import ArtifactEvaluation, Evaluation
from phiquant.evaluate.speed import measure_in_subprocess
from phiquant.evaluate.text import load_text, text_sha256, token_windows
from phiquant.sources import ModelSource, open_source
from phiquant.sources.config import ModelTraits

log = logging.getLogger(__name__)

# Tokens scored past the point where a sliding window or longrope takes over.
LONG_CONTEXT_MARGIN = 256


@dataclass(frozen=True)
class LongContextProbe:
    """One long window crossing the point where attention or rope changes."""

    switch_at: int
    tokens: int
    reason: str


def long_context_probe(traits: ModelTraits) -> LongContextProbe | None:
    """Where a model behaves differently past some length, a window crossing it."""
    window = traits.sliding_window
    if window and window < traits.max_position_embeddings:
        switch, reason = int(window), f"sliding window of {window} tokens"
    elif traits.rope.kind == "longrope":
        switch = traits.original_max_position_embeddings
        reason = f"longrope switches to long factors after {switch} tokens"
    else:
        return None
    length = min(switch + LONG_CONTEXT_MARGIN, traits.max_position_embeddings)
    return LongContextProbe(switch_at=switch, tokens=length, reason=reason)


def _source_spec(manifest: dict[str, Any]) -> str:
    source = manifest["source"]
    if source["kind"] == "demo":
        return "demo"
    if source["kind"] == "hub" and source.get("hub_id"):
        return source["hub_id"]
    return source["path"]


def resolve_reference(
    artifacts: list[Path], reference: str | Path | None
) -> tuple[ModelSource, list[str]]:
    """The reference source, and notes on how it relates to the artifacts."""
    manifests = {
        path: read_manifest(path)
        for path in artifacts
        if (path / MANIFEST_NAME).exists()
    }
    if reference is not None:
        source = open_source(reference)
        differing = [
            str(path)
            for path, manifest in manifests.items()
            if manifest["source"]["content_sha256"] != source.content_hash
        ]
        notes = (
            [f"built from another source than the reference: {', '.join(differing)}"]
            if differing
            else []
        )
        return source, notes

    if len(manifests) < len(artifacts):
        raise UsageError(
            "some artifacts have no phiquant manifest, so their source is unknown",
            "Pass --reference SOURCE",
        )
    hashes = {m["source"]["content_sha256"] for m in manifests.values()}
    if len(hashes) > 1:
        raise UsageError(
            "the artifacts were built from different sources",
            "Evaluate them separately or pass --reference SOURCE",
        )
    manifest = next(iter(manifests.values()))
    source = open_source(
        _source_spec(manifest), revision=manifest["source"].get("revision")
    )
    if source.content_hash != manifest["source"]["content_sha256"]:
        raise UsageError(
            f"the source at {source.path} changed since the artifacts were built",
            "Pass --reference SOURCE to compare against it anyway",
        )
    return source, []


def artifact_paths(arguments: list[str | Path]) -> list[Path]:
    """The artifacts named by ``arguments``, each checked to be one.

    A folder that is no artifact but holds artifact folders (the ``--out`` of
    ``phiquant quantize``) stands for all of them, so reports beside them are
    skipped.
    """
    from phiquant.api import artifact_backend

    paths: list[Path] = []
    for argument in arguments:
        given = Path(argument)
        if given.is_dir() and not (given / MANIFEST_NAME).exists():
            held = sorted(p for p in given.iterdir() if (p / MANIFEST_NAME).is_file())
            if held:
                paths += [p.resolve() for p in held]
                continue
        artifact_backend(given)  # a clear error for what is not an artifact
        paths.append(given.resolve())
    return list(dict.fromkeys(paths))


def _describe(path: Path) -> ArtifactEvaluation:
    from phiquant.api import artifact_backend

    backend = artifact_backend(path)
    info = backend.describe(path)
    manifest_sha256 = None
    if (path / MANIFEST_NAME).exists():
        target = read_manifest(path)["target"]
        name, fmt, precision = target["name"], target["format"], target["precision"]
        manifest_sha256 = sha256_file(path / MANIFEST_NAME)
    else:
        name, fmt, precision = path.name, info.format, "?"
    return ArtifactEvaluation(
        name=name,
        path=str(path),
        backend=backend.name,
        format=fmt,
        precision=precision,
        size_bytes=info.size_bytes,
        parameter_count=info.parameter_count,
        bits_per_weight=info.bits_per_weight,
        manifest_sha256=manifest_sha256,
    )


def _long_context_figures(scores: metrics.WindowScores, switch_at: int) -> dict:
    before, after = scores.kld[:switch_at], scores.kld[switch_at:]
    return {
        "switch_at": switch_at,
        "tokens": len(scores.kld) + 1,
        "kld_mean_before": float(before.mean()),
        "kld_mean_after": float(after.mean()),
        "kld_max_after": float(after.max()),
        "top1_agreement_after": float(scores.top1_match[switch_at:].mean()),
    }


def evaluate_artifacts(
    artifacts: list[str | Path],
    *,
    reference: str | Path | None = None,
    text: str | Path | None = None,
    windows: int = 16,
    window_tokens: int = 512,
    speed: bool = True,
    long_context: bool | None = None,
    decode_tokens: int = 128,
    progress: ProgressFn = no_progress,
) -> Evaluation:
    """Score every artifact on the same windows against the fp32 reference."""
    if not artifacts:
        raise UsageError(
            "no artifacts to evaluate", "Pass one or more artifact folders"
        )
    if windows < 1:
        raise UsageError(f"--windows must be at least 1, not {windows}", "E.g. 16")
    if window_tokens < 16:
        raise UsageError(
            f"--window-tokens must be at least 16, not {window_tokens}", "E.g. 512"
        )
    paths = artifact_paths(artifacts)
    source, notes = resolve_reference(paths, reference)
    context = source.traits.max_position_embeddings
    if window_tokens > context:
        raise UsageError(
            f"--window-tokens {window_tokens} is longer than the model's "
            f"{context}-token context",
            f"Use at most {context}",
        )

    eval_text = load_text(text)
    token_ids = tokenize_text(source, eval_text)
    chunks = token_windows(token_ids, window_tokens, windows)
    first = window_tokens // 2
    references = reference_predictions(source, chunks, first, progress=progress)

    probe = long_context_probe(source.traits)
    if long_context is False or (probe and len(token_ids) < probe.tokens):
        probe = None
    elif long_context and probe is None:
        notes.append(
            "no long-context probe: the model has no sliding window or longrope"
        )
    probe_reference = None
    if probe:
        probe_reference = reference_predictions(
            source, [token_ids[: probe.tokens]], 0, progress=progress
        )[0]

    evaluation = Evaluation(
        reference={
            "source": source.describe(),
            "runtime": "transformers fp32",
            "perplexity": float(
                np.exp(-np.concatenate([r.target_logprobs for r in references]).mean())
            ),
            "notes": notes,
        },
        settings={
            "text": str(text) if text else "WikiText-2 test (shipped with phiquant)",
            "text_sha256": text_sha256(eval_text),
            "windows": windows,
            "window_tokens": window_tokens,
            "scored_from_position": first,
            "top_k": int(references[0].top_ids.shape[1]),
            "long_context": None if probe is None else probe.__dict__,
            "decode_tokens": decode_tokens,
        },
        versions=library_versions(),
    )

    context = max(window_tokens, probe.tokens if probe else 0) + 8
    for index, path in enumerate(paths):
        progress(index, len(paths), f"scoring {path.name}")
        evaluation.artifacts.append(
            _evaluate_one(path, references, probe, probe_reference, context)
        )
    if speed:
        for index, result in enumerate(evaluation.artifacts):
            progress(index, len(paths), f"timing {Path(result.path).name}")
            if result.error is None:
                try:
                    result.speed = measure_in_subprocess(
                        Path(result.path), chunks[0], decode_tokens
                    )
                except PhiquantError as error:
                    result.error = error.message
    return evaluation


def _evaluate_one(
    path, references, probe, probe_reference, context
) -> ArtifactEvaluation:
    from phiquant.api import load_artifact

    result = _describe(path)
    try:
        with load_artifact(path, context_tokens=context) as runner:
            scores = [
                metrics.score_window(ref, runner.score(ref.tokens.tolist()))
                for ref in references
            ]
            result.quality = metrics.summarise(scores)
            if probe is not None:
                long_scores = metrics.score_window(
                    probe_reference, runner.score(probe_reference.tokens.tolist())
                )
                result.long_context = _long_context_figures(
                    long_scores, probe.switch_at
                )
    except (PhiquantError, FloatingPointError) as error:
        result.error = getattr(error, "message", str(error))
        log.warning("%s: %s", path, result.error)
    return result
