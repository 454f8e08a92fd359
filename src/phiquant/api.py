"""phiquant's Python API; every CLI command is a thin wrapper over one of these.

>>> from phiquant import quantize, run
>>> results = quantize("demo", ["gguf:int4"], out="phiquant-out/demo")
>>> print(run(results[0].path, "What is the capital of France?").collect().text)
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiquant.artifacts import (
    MANIFEST_NAME,
    atomic_folder,
    check_files,
    output_errors,
    read_manifest,
    refuse_inside,
    write_manifest,
)
from phiquant.backends import get_backend, resolve_target
from phiquant.backends.base import (
    ArtifactInfo,
    Backend,
    ChatResult,
    ChatStream,
    ProgressFn,
    Runner,
    no_progress,
)
from phiquant.errors import ArtifactError, OutputError, SourceError, UsageError
from phiquant.evaluate.results import Evaluation
from phiquant.sources import DEMO_NAME, ModelSource, open_source
from phiquant.sources.hub import looks_like_hub_id
from phiquant.targets import Target

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("gguf:fp16", "gguf:int8", "gguf:int4")
DEFAULT_PROMPT = "What is the capital of France?"
DEFAULT_OUT = Path("phiquant-out")
# What to do about an artifact that is damaged or does not match its manifest.
REBUILD = "Rebuild it with `phiquant quantize ... --force`"


@dataclass
class QuantizeResult:
    """One artifact built by :func:`quantize`, with its smoke-test answer."""

    target: Target
    path: Path
    info: ArtifactInfo
    answer: ChatResult | None
    notes: list[str] = field(default_factory=list)


def _resolve_targets(
    targets: str | list[str] | tuple[str, ...] | None,
    device: str | None,
    options: dict[str, dict[str, object]] | None = None,
) -> list[Target]:
    if isinstance(targets, str):
        targets = [targets]
    if targets is not None and not targets and device is None:
        raise UsageError("no targets given", "Name at least one, e.g. gguf:int4")
    texts = list(targets or [])
    if device is not None:
        texts += _device_targets(device)
    resolved: dict[str, Target] = {}
    for text in texts or DEFAULT_TARGETS:
        target = resolve_target(text)
        resolved.setdefault(target.name, target)
    options = options or {}
    unused = set(options) - {t.backend for t in resolved.values()}
    if unused:
        raise UsageError(
            f"options given for {', '.join(sorted(unused))}, which no target uses",
            "Check the BACKEND part of --option BACKEND.NAME=VALUE",
        )
    return [
        dataclasses.replace(t, options=dict(options.get(t.backend, {})))
        for t in resolved.values()
    ]


def parse_options(pairs: list[str] | None) -> dict[str, dict[str, str]]:
    """``["onnx.block_size=128"]`` -> ``{"onnx": {"block_size": "128"}}``."""
    options: dict[str, dict[str, str]] = {}
    for pair in pairs or []:
        key, equals, value = pair.partition("=")
        backend, dot, name = key.partition(".")
        if not (equals and dot and backend and name):
            raise UsageError(
                f"invalid option {pair!r}",
                "Write BACKEND.NAME=VALUE, e.g. onnx.block_size=128",
            )
        options.setdefault(backend.strip(), {})[name.strip()] = value.strip()
    return options


def _device_targets(device: str) -> list[str]:
    """A device profile's targets that this phiquant version can build."""
    from phiquant.backends import REGISTRY
    from phiquant.devices import get_profile

    profile = get_profile(device)
    available = [t for t in profile.targets if t.split(":")[0] in REGISTRY]
    skipped = sorted(set(profile.targets) - set(available))
    if skipped:
        log.warning(
            "%s: skipping %s (backend not available)", device, ", ".join(skipped)
        )
    if not available:
        raise UsageError(
            f"no backend for the {device} profile is available in this version",
            f"It needs one of: {', '.join(profile.backends)}",
        )
    return available


def default_output_dir(source_name: str) -> Path:
    return DEFAULT_OUT / source_name


def quantize(
    source: str | Path = DEMO_NAME,
    targets: str | list[str] | tuple[str, ...] | None = None,
    *,
    out: str | Path | None = None,
    force: bool = False,
    revision: str | None = None,
    allow_pickle: bool = False,
    prompt: str | None = DEFAULT_PROMPT,
    max_tokens: int = 64,
    device: str | None = None,
    options: dict[str, dict[str, object]] | None = None,
    progress: ProgressFn = no_progress,
) -> list[QuantizeResult]:
    """Build one artifact folder per target under ``out``.

    ``targets`` are strings such as ``gguf:int4`` (one string or a list);
    ``device`` adds a device profile's targets (``phone``, ``mac``...); with
    neither, fp16, int8 and int4 GGUF are built. ``options`` holds
    per-backend settings, e.g. ``{"onnx": {"block_size": 128}}``; each backend
    validates its own. Each artifact is written atomically, then loaded in its
    runtime and asked ``prompt`` (skip with ``prompt=None``) before it is
    moved into place. Existing artifacts are refused unless ``force``.
    """
    resolved = _resolve_targets(targets, device, options)
    for backend_name in dict.fromkeys(t.backend for t in resolved):
        get_backend(backend_name).ensure_available()

    model = open_source(source, revision=revision, allow_pickle=allow_pickle)
    for target in resolved:
        get_backend(target.backend).validate(model, target)
    out_root = Path(out) if out is not None else default_output_dir(model.name)
    for target in resolved:
        dest = out_root / target.slug
        if dest.exists() and not force:
            raise OutputError(
                f"{dest} already exists",
                "Pass --force to replace it, or choose another --out",
            )

    results = []
    for target in resolved:
        results.append(
            _build_one(
                model,
                target,
                out_root / target.slug,
                force,
                prompt,
                max_tokens,
                progress,
            )
        )
    return results


def _build_one(
    model: ModelSource,
    target: Target,
    dest: Path,
    force: bool,
    prompt: str | None,
    max_tokens: int,
    progress: ProgressFn,
) -> QuantizeResult:
    backend = get_backend(target.backend)
    protected = model.origin or model.path
    try:
        return _build_into(
            model, target, backend, dest, force, protected, prompt, max_tokens, progress
        )
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OutputError(
                f"no space left while writing {dest} ({error.strerror})",
                "Free some disk space or choose another --out; nothing was kept",
            ) from error
        raise


def _build_into(
    model: ModelSource,
    target: Target,
    backend: Backend,
    dest: Path,
    force: bool,
    protected: Path,
    prompt: str | None,
    max_tokens: int,
    progress: ProgressFn,
) -> QuantizeResult:
    with atomic_folder(dest, force=force, protected=protected) as staging:
        built = backend.build(model, target, staging, progress)
        info = backend.describe(staging)
        answer = None
        notes = list(built.notes)
        if prompt is not None and not backend.can_run(target):
            notes.append(
                f"not test-run: this machine cannot run {target.name} "
                f"({target.device or 'default'} device)"
            )
            prompt = None
        if prompt is not None and model.chat_template is None:
            notes.append(
                "not test-run: the source has no chat template (a base model); "
                "score it with `phiquant eval`"
            )
            prompt = None
        if prompt is not None:
            progress(0, None, f"{target.name}: answering the test prompt")
            with backend.load(staging) as runner:
                answer = runner.chat(_messages(prompt), max_tokens).collect()
        write_manifest(
            staging,
            {
                "tool": "phiquant",
                "source": model.describe(),
                "target": {
                    "name": target.name,
                    "backend": target.backend,
                    "format": target.quant,
                    "precision": target.precision,
                    "device": target.device,
                },
                "runtime": backend.runtime,
                "model": {
                    "architecture": model.traits.architecture,
                    "context_length": model.traits.max_position_embeddings,
                    "chat_template": model.chat_template is not None,
                    "kv_cache_bytes_per_token_fp16": (
                        model.traits.kv_cache_bytes_per_token(2)
                    ),
                },
                "options": built.options,
                "notes": notes,
                "stop_token_ids": built.stop_token_ids,
                "size_bytes": info.size_bytes,
                "parameter_count": info.parameter_count,
                "bits_per_weight": round(info.bits_per_weight, 4),
                "smoke_test": None
                if answer is None
                else {
                    "prompt": prompt,
                    "answer": answer.text,
                    "finish_reason": answer.finish_reason,
                    "tokens": answer.n_tokens,
                },
            },
        )
    return QuantizeResult(target, dest.resolve(), info, answer, notes)


def _messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def _owning_backend(path: Path) -> Backend | None:
    from phiquant.backends import available_backends

    return next((b for b in available_backends() if b.owns(path)), None)


def artifact_backend(path: str | Path) -> Backend:
    """The backend that made an artifact folder (or owns a bare model file)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no artifact at {path}", "Check the path")
    if (path / MANIFEST_NAME).exists():
        return get_backend(read_manifest(path)["target"]["backend"])
    backend = _owning_backend(path)
    if backend is not None:
        return backend
    raise ArtifactError(
        f"{path} is not a phiquant artifact (no {MANIFEST_NAME})",
        "Pass a folder made by `phiquant quantize` or a .gguf file",
    )


def load_artifact(path: str | Path, *, context_tokens: int = 2048) -> Runner:
    """Open an artifact in its runtime for chatting and scoring."""
    path = Path(path)
    backend = artifact_backend(path)
    if (path / MANIFEST_NAME).exists():
        # Runtimes report a missing file in their own words, or crash on it.
        files = read_manifest(path)["files"]
        missing = [name for name in files if not (path / name).is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ArtifactError(
                f"{path} lacks {missing[0]}{more}, listed in its manifest",
                REBUILD,
            )
    return backend.load(path, context_tokens=context_tokens)


def run(
    artifact: str | Path,
    prompt: str,
    *,
    max_tokens: int = 256,
    system: str | None = None,
) -> ChatStream:
    """Reply to ``prompt`` with the artifact's chat template, greedily.

    Iterate over the returned stream for text pieces as they are generated;
    its ``result`` then says whether the reply ended at the end-of-turn
    token (``finish_reason == "stop"``) or hit ``max_tokens``.
    """
    if max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1", "")
    if not _has_chat_template(Path(artifact)):
        raise ArtifactError(
            f"{artifact} has no chat template: its source is a base model "
            "(such as phi-2), not a chat model",
            "Score it with `phiquant eval`, or quantize an instruct model to chat",
        )
    runner = load_artifact(artifact)
    stream = runner.chat(_messages(prompt, system), max_tokens)
    stream.on_close(runner.close)
    return stream


@dataclass
class VerifyResult:
    """What :func:`verify` checked and the answer the artifact gave."""

    path: Path
    files_checked: int
    # None for base models without a chat template: they are only loaded
    # and made to continue a text.
    answer: ChatResult | None


def verify(
    artifact: str | Path, prompt: str = "What is 2 + 2?", max_tokens: int = 128
) -> VerifyResult:
    """Check an artifact against its manifest, then load it and chat once.

    Raises ArtifactError when a file is missing, extra or changed, when the
    runtime cannot load it, or when the reply does not end at the
    end-of-turn token within ``max_tokens``.
    """
    path = Path(artifact)
    manifest = read_manifest(path)
    problems = check_files(path, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(
            f"{path} does not match its manifest: {problems[0]}{more}",
            REBUILD,
        )
    _check_manifest_describes_files(path, manifest)
    with load_artifact(path) as runner:
        unknown_stops = set(manifest.get("stop_token_ids", [])) - runner.stop_token_ids
        if unknown_stops:
            raise ArtifactError(
                f"{path}'s manifest lists stop token(s) {sorted(unknown_stops)} "
                "that its runtime does not stop at",
                REBUILD,
            )
        if not _has_chat_template(path):
            _check_continues_text(runner, prompt, path)
            return VerifyResult(path, len(manifest["files"]), None)
        answer = runner.chat(_messages(prompt), max_tokens).collect()
    if answer.finish_reason != "stop":
        raise ArtifactError(
            f"{path} loaded but did not reach its end-of-turn token within "
            f"{max_tokens} tokens",
            "Check the artifact's stop tokens with `phiquant inspect`",
        )
    return VerifyResult(path, len(manifest["files"]), answer)


def _check_manifest_describes_files(path: Path, manifest: dict[str, Any]) -> None:
    """The manifest's own figures must be those of the files it hashes."""
    info = artifact_backend(path).describe(path)
    actual = {
        "size_bytes": info.size_bytes,
        "parameter_count": info.parameter_count,
        "bits_per_weight": round(info.bits_per_weight, 4),
    }
    for key, value in actual.items():
        if manifest.get(key) != value:
            raise ArtifactError(
                f"{path}'s manifest states {key} {manifest.get(key)}, but its "
                f"files have {value}",
                REBUILD,
            )


def _has_chat_template(path: Path) -> bool:
    """False only when the manifest says the source had no chat template."""
    if not (path / MANIFEST_NAME).exists():
        return True  # bare model files: let the runtime decide
    return read_manifest(path).get("model", {}).get("chat_template", True)


def _check_continues_text(runner: Runner, prompt: str, path: Path) -> None:
    """A base model has no turn to end; it must at least continue a text."""
    prompt_ids = runner.tokenize(prompt)
    continuation = list(runner.generate_ids(prompt_ids, 4))
    if len(continuation) != 4:
        raise ArtifactError(
            f"{path} loaded but did not continue a text",
            REBUILD,
        )


def inspect(path: str | Path) -> dict[str, Any]:
    """Describe a source model or an artifact: architecture, precision, size."""
    candidate = Path(path)
    if candidate.exists() and (
        (candidate / MANIFEST_NAME).exists() or _owning_backend(candidate)
    ):
        return _inspect_artifact(candidate)
    if (
        str(path) != DEMO_NAME
        and not candidate.exists()
        and not looks_like_hub_id(str(path))
    ):
        raise SourceError(
            f"no model folder or artifact at {path}",
            "Pass `demo`, a Hugging Face folder, a hub id, an artifact folder or "
            "a .gguf file",
        )
    return _inspect_source(open_source(path))


def _inspect_artifact(path: Path) -> dict[str, Any]:
    backend = artifact_backend(path)
    info = backend.describe(path)
    report: dict[str, Any] = {
        "kind": "artifact",
        "path": str(path),
        "format": info.format,
        "runtime": backend.runtime,
        "size_bytes": info.size_bytes,
        "parameter_count": info.parameter_count,
        "bits_per_weight": info.bits_per_weight,
        "tensor_types": info.tensor_types,
        "metadata": info.metadata,
    }
    if (path / MANIFEST_NAME).exists():
        manifest = read_manifest(path)
        report["target"] = manifest["target"]["name"]
        report["source"] = manifest["source"]
        report["notes"] = manifest.get("notes", [])
    return report


def _inspect_source(model: ModelSource) -> dict[str, Any]:
    traits = model.traits
    dtypes = model.dtype_histogram()
    parameters = sum(dtypes.values())
    end_of_turn = model.end_of_turn_token
    return {
        "kind": "source",
        "name": model.name,
        "path": str(model.path),
        "architecture": traits.architecture,
        "family": model.family.description,
        "size_bytes": model.size_bytes,
        "parameter_count": parameters,
        "bits_per_weight": 8 * model.size_bytes / parameters if parameters else None,
        "tensor_types": dict(dtypes.most_common()),
        "traits": {
            "layers": traits.num_layers,
            "hidden_size": traits.hidden_size,
            "attention_heads": traits.num_heads,
            "kv_heads": traits.num_kv_heads,
            "head_dim": traits.head_dim,
            "vocab_size": traits.vocab_size,
            "context_length": traits.max_position_embeddings,
            "rope_kind": traits.rope.kind,
            "rope_theta": traits.rope_theta,
            "longrope_switch_tokens": traits.longrope_switch_tokens,
            "rotary_dim": traits.rotary_dim,
            "norm": "LayerNorm" if model.family.norm == "layer" else "RMSNorm",
            "activation": traits.hidden_act,
            "sliding_window": traits.sliding_window,
            "tied_embeddings": traits.tie_word_embeddings,
            "kv_cache_bytes_per_token_fp16": traits.kv_cache_bytes_per_token(2),
        },
        "stop_tokens": list(model.stop_token_ids),
        "end_of_turn_token": end_of_turn[0] if end_of_turn else None,
        "chat_template": model.chat_template is not None,
    }


def evaluate(
    artifacts: list[str | Path],
    *,
    reference: str | Path | None = None,
    text: str | Path | None = None,
    json_path: str | Path | None = None,
    out: str | Path | None = None,
    windows: int = 16,
    window_tokens: int = 512,
    speed: bool = True,
    long_context: bool | None = None,
    progress: ProgressFn = no_progress,
) -> tuple[Evaluation, dict[str, Path]]:
    """Score artifacts on the same text against one fp32 reference; write reports.

    ``reference`` defaults to the source named in the artifacts' manifests.
    Reports (results.json, report.md, report.html) go to ``out``, by default
    the folder holding the artifacts; ``json_path`` writes the results there
    too. Artifacts that the folder's earlier results scored on the same
    windows against the same reference stay in the reports, unless rebuilt
    or removed since. Returns the results and the report paths.
    """
    from phiquant.evaluate.pipeline import evaluate_artifacts
    from phiquant.evaluate.results import RESULTS_NAME, carry_over_earlier
    from phiquant.report import write_reports

    evaluation = evaluate_artifacts(
        artifacts,
        reference=reference,
        text=text,
        windows=windows,
        window_tokens=window_tokens,
        speed=speed,
        long_context=long_context,
        progress=progress,
    )
    scored = [a.path for a in evaluation.artifacts]
    out_dir = Path(out) if out is not None else _common_parent(scored)
    source_path = Path(evaluation.reference["source"]["path"])
    for destination in (out_dir, *([Path(json_path)] if json_path else [])):
        refuse_inside(destination, source_path)
    carry_over_earlier(evaluation, out_dir / RESULTS_NAME)
    paths = write_reports(evaluation, out_dir)
    if json_path is not None:
        with output_errors(Path(json_path)):
            evaluation.save(Path(json_path))
        paths["json_copy"] = Path(json_path)
    return evaluation, paths


def _common_parent(artifacts: list[str | Path]) -> Path:
    parents = {Path(a).resolve().parent for a in artifacts}
    return parents.pop() if len(parents) == 1 else DEFAULT_OUT / "eval"


def report(results_dir: str | Path) -> tuple[Evaluation, dict[str, Path]]:
    """Rebuild the reports of ``results_dir`` from its stored results.json."""
    from phiquant.report import write_reports

    evaluation = Evaluation.load(Path(results_dir))
    folder = Path(results_dir)
    return evaluation, write_reports(
        evaluation, folder if folder.is_dir() else folder.parent
    )


def recommend(
    device: str,
    artifacts_dir: str | Path = DEFAULT_OUT / DEMO_NAME,
    *,
    ram: str | int | None = None,
    context_tokens: int | None = None,
    max_kld: float | None = None,
):
    """Choose the artifact to ship for ``device`` from an artifacts folder.

    ``ram`` overrides the profile's memory budget (``"4GB"`` or bytes),
    ``context_tokens`` its context length and ``max_kld`` its quality budget.
    Uses the folder's stored evaluation (results.json) when there is one.
    Returns a :class:`~phiquant.devices.recommend.Recommendation`; its
    ``explain()`` gives the reasons line by line.
    """
    from phiquant.devices import get_profile, parse_size
    from phiquant.devices.recommend import load_candidates, recommend_from

    profile = get_profile(device)
    budget = (
        profile.memory_bytes
        if ram is None
        else (ram if isinstance(ram, int) else parse_size(ram))
    )
    if budget < 1:
        raise UsageError(f"--ram must be a positive size, not {ram}", "E.g. 4GB")
    context = profile.context_tokens if context_tokens is None else context_tokens
    if context < 1:
        raise UsageError("--context must be at least 1 token", "E.g. 4096")
    if max_kld is not None and not 0 <= max_kld < float("inf"):
        raise UsageError(
            f"--max-kld must be a KL divergence of 0 or more, not {max_kld}",
            "E.g. 0.05",
        )
    candidates = load_candidates(Path(artifacts_dir), context)
    return recommend_from(
        candidates,
        profile,
        budget,
        context,
        profile.max_kld if max_kld is None else max_kld,
    )
