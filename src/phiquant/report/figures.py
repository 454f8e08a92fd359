"""Formatting and derived figures shared by every report format."""

from __future__ import annotations

from phiquant.evaluate.results import ArtifactEvaluation, Evaluation


def format_bytes(size: float | None) -> str:
    if size is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def pareto_front(artifacts: list[ArtifactEvaluation]) -> set[str]:
    """Names of artifacts that no other artifact beats on both size and KLD."""
    scored = [a for a in artifacts if a.quality]
    front = set()
    for candidate in scored:
        size, kld = candidate.size_bytes, candidate.quality["kld_mean"]
        dominated = any(
            other.size_bytes <= size
            and other.quality["kld_mean"] <= kld
            and (other.size_bytes < size or other.quality["kld_mean"] < kld)
            for other in scored
        )
        if not dominated:
            front.add(candidate.name)
    return front


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _section(name: str, key: str, spec: str, scale: float = 1.0):
    """A cell renderer for ``artifact.<name>[key]`` that tolerates missing data."""

    def render(artifact: ArtifactEvaluation) -> str:
        section = getattr(artifact, name)
        return _number(None if not section else scale * section[key], spec)

    return render


# (header, function of an artifact -> cell text); one list for every format.
COLUMNS = [
    ("artifact", lambda a: a.name),
    ("size", lambda a: format_bytes(a.size_bytes)),
    ("bits/w", lambda a: f"{a.bits_per_weight:.2f}"),
    ("PPL", _section("quality", "perplexity", ".2f")),
    ("ΔPPL", _section("quality", "delta_perplexity", "+.2f")),
    ("KLD", _section("quality", "kld_mean", ".1e")),
    ("KLD p99", _section("quality", "kld_p99", ".1e")),
    ("top-1%", _section("quality", "top1_agreement", ".1f", 100.0)),
    ("long KLD", _section("long_context", "kld_mean_after", ".1e")),
    ("prefill t/s", _section("speed", "prefill_tokens_per_s", ".0f")),
    ("decode t/s", _section("speed", "decode_tokens_per_s", ".1f")),
    ("TTFT s", _section("speed", "time_to_first_token_s", ".2f")),
    ("load s", _section("speed", "load_s", ".2f")),
    (
        "peak RSS",
        lambda a: format_bytes(a.speed["peak_rss_bytes"] if a.speed else None),
    ),
]
SPEED_HEADERS = {"prefill t/s", "decode t/s", "TTFT s", "load s", "peak RSS"}


def table_rows(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """Headers and cell texts; Pareto-optimal artifacts are starred."""
    columns = [
        c
        for c in COLUMNS
        if c[0] != "long KLD" or evaluation.settings.get("long_context")
    ]
    if not any(a.speed for a in evaluation.artifacts):
        columns = [c for c in columns if c[0] not in SPEED_HEADERS]
    front = pareto_front(evaluation.artifacts)
    rows = []
    for artifact in evaluation.artifacts:
        cells = [render(artifact) for _, render in columns]
        if artifact.name in front:
            cells[0] += " ★"
        rows.append(cells)
    return [header for header, _ in columns], rows


def reference_summary(evaluation: Evaluation) -> str:
    settings, reference = evaluation.settings, evaluation.reference
    source = reference["source"]
    return (
        f"Reference: {source['name']} ({source['architecture']}) in "
        f"{reference['runtime']}, perplexity {reference['perplexity']:.3f}. "
        f"Text: {settings['text']}; {settings['windows']} windows of "
        f"{settings['window_tokens']} tokens, second half of each scored. "
        "KLD: mean KL divergence per position, over the reference's top "
        f"{settings['top_k']} tokens plus the rest. "
        "★ = on the size/KLD Pareto front."
    )
