"""Pick what to ship for a device, and say why.

The choice is the smallest artifact that the device runs, that fits its
memory budget at the wanted context length, and whose evaluated quality is
within budget. Artifacts not evaluated yet are judged on memory alone, and
the explanation says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from phiquant.artifacts import MANIFEST_NAME, read_manifest
from phiquant.devices.memory import MemoryEstimate, estimate_memory, kv_cache_bytes
from phiquant.devices.profiles import DeviceProfile
from phiquant.errors import UsageError
from phiquant.evaluate.results import RESULTS_NAME, Evaluation
from phiquant.report.figures import format_bytes


@dataclass
class Candidate:
    """One artifact as seen by the recommendation."""

    name: str
    path: Path
    backend: str
    precision: str
    device: str | None
    size_bytes: int
    estimate: MemoryEstimate
    measured_need_bytes: int | None = None
    kld_mean: float | None = None
    delta_perplexity: float | None = None
    evaluation_error: str | None = None
    rejected_because: list[str] = field(default_factory=list)

    @property
    def need_bytes(self) -> int:
        """Memory needed: the estimate, or the measured peak if that is larger."""
        return max(self.estimate.total_bytes, self.measured_need_bytes or 0)


@dataclass
class Recommendation:
    device: DeviceProfile
    budget_bytes: int
    context_tokens: int
    max_kld: float
    chosen: Candidate | None
    candidates: list[Candidate]

    def explain(self) -> list[str]:
        """A few lines: the choice and its reasons, then every rejection."""
        header = (
            f"{self.device.name}: budget {format_bytes(self.budget_bytes)}, "
            f"{self.context_tokens}-token context, mean KLD at most {self.max_kld:g}"
        )
        lines = [header]
        if self.chosen is None:
            lines.append("No artifact qualifies.")
        else:
            lines += [f"Recommended: {self.chosen.name} ({self.chosen.path})"]
            lines += [f"  {reason}" for reason in _reasons_for(self.chosen, self)]
        rejected = [c for c in self.candidates if c.rejected_because]
        if rejected:
            lines.append("Rejected:")
            lines += [f"  {c.name}: {'; '.join(c.rejected_because)}" for c in rejected]
        others = [
            c
            for c in self.candidates
            if not c.rejected_because and c is not self.chosen
        ]
        if others:
            names = ", ".join(c.name for c in others)
            lines.append(f"Also qualify, but larger: {names}")
        return lines


def _memory_text(candidate: Candidate) -> str:
    estimate = candidate.estimate
    text = (
        f"needs {format_bytes(candidate.need_bytes)}: weights "
        f"{format_bytes(estimate.weights_bytes)} + KV cache "
        f"{format_bytes(estimate.kv_cache_bytes)} + runtime "
        f"{format_bytes(estimate.overhead_bytes)}"
    )
    if candidate.measured_need_bytes:
        text += " (measured peak scaled to this context: "
        text += f"{format_bytes(candidate.measured_need_bytes)})"
    return text


def _reasons_for(candidate: Candidate, recommendation: Recommendation) -> list[str]:
    budget = format_bytes(recommendation.budget_bytes)
    reasons = [f"fits: {_memory_text(candidate)} <= {budget}"]
    if candidate.kld_mean is None:
        reasons.append("quality: not evaluated; run `phiquant eval` to check it")
    else:
        reasons.append(
            f"quality: mean KLD {candidate.kld_mean:.2g} <= {recommendation.max_kld:g}"
            f", perplexity {candidate.delta_perplexity:+.2f} vs the original"
        )
    reasons.append(
        f"smallest qualifying artifact: {format_bytes(candidate.size_bytes)}"
    )
    return reasons


def _profile_targets(device: DeviceProfile) -> list:
    """The device's targets that this phiquant version can build."""
    from phiquant.backends import resolve_target

    targets = []
    for text in device.targets:
        try:
            targets.append(resolve_target(text))
        except UsageError:
            continue  # a backend this version does not have
    return targets


def _runs_on(candidate: Candidate, device: DeviceProfile) -> bool:
    for target in _profile_targets(device):
        # No device means the backend's default, the CPU.
        same_device = (
            target.device is None or (candidate.device or "cpu") == target.device
        )
        if (
            target.backend == candidate.backend
            and target.precision == candidate.precision
            and same_device
        ):
            return True
    return False


def load_candidates(folder: Path, context_tokens: int) -> list[Candidate]:
    """Every artifact under ``folder``, with evaluation results where stored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(
            f"no artifacts folder at {folder}",
            "Build some with `phiquant quantize --device DEVICE` first",
        )
    evaluated = {}
    if (folder / RESULTS_NAME).exists():
        for result in Evaluation.load(folder).artifacts:
            evaluated[Path(result.path).resolve()] = result

    candidates = []
    for path in sorted(p for p in folder.iterdir() if (p / MANIFEST_NAME).exists()):
        manifest = read_manifest(path)
        target = manifest["target"]
        per_token = manifest.get("model", {}).get("kv_cache_bytes_per_token_fp16", 0)
        candidate = Candidate(
            name=target["name"],
            path=path,
            backend=target["backend"],
            precision=target["precision"],
            device=target.get("device"),
            size_bytes=manifest["size_bytes"],
            estimate=estimate_memory(
                manifest["size_bytes"], per_token, target["backend"], context_tokens
            ),
        )
        result = evaluated.get(path.resolve())
        if result is not None:
            candidate.evaluation_error = result.error
            if result.quality:
                candidate.kld_mean = result.quality["kld_mean"]
                candidate.delta_perplexity = result.quality["delta_perplexity"]
            if result.speed:
                measured_context = (
                    result.speed["prompt_tokens"] + result.speed["decode_tokens"]
                )
                extra_kv = kv_cache_bytes(per_token, context_tokens - measured_context)
                candidate.measured_need_bytes = result.speed["peak_rss_bytes"] + max(
                    extra_kv, 0
                )
        candidates.append(candidate)
    if not candidates:
        raise UsageError(
            f"no phiquant artifacts in {folder}",
            "Build some with `phiquant quantize --device DEVICE` first",
        )
    return candidates


def recommend_from(
    candidates: list[Candidate],
    device: DeviceProfile,
    budget_bytes: int,
    context_tokens: int,
    max_kld: float,
) -> Recommendation:
    """Judge every candidate and choose the smallest that qualifies."""
    for candidate in candidates:
        reasons = candidate.rejected_because
        if not _runs_on(candidate, device):
            formats = ", ".join(device.targets)
            reasons.append(f"not a {device.name} format (it runs {formats})")
            continue
        if candidate.evaluation_error:
            reasons.append(f"failed evaluation: {candidate.evaluation_error}")
        if candidate.need_bytes > budget_bytes:
            budget = format_bytes(budget_bytes)
            reasons.append(f"does not fit: {_memory_text(candidate)} > {budget}")
        if candidate.kld_mean is not None and not math.isfinite(candidate.kld_mean):
            reasons.append(
                "quality unknown: its evaluation gave a non-finite mean KLD; "
                "evaluate it again"
            )
        elif candidate.kld_mean is not None and candidate.kld_mean > max_kld:
            reasons.append(
                f"quality budget not met: mean KLD {candidate.kld_mean:.2g} "
                f"> {max_kld:g}"
            )

    qualifying = [c for c in candidates if not c.rejected_because]
    qualifying.sort(key=lambda c: (c.size_bytes, c.kld_mean or 0.0))
    return Recommendation(
        device=device,
        budget_bytes=budget_bytes,
        context_tokens=context_tokens,
        max_kld=max_kld,
        chosen=qualifying[0] if qualifying else None,
        candidates=candidates,
    )
