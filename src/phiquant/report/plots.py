"""Matplotlib figures of an evaluation, as PNG bytes."""

from __future__ import annotations

import io

from phiquant.evaluate.results import Evaluation
from phiquant.report.figures import pareto_front


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def size_vs_kld(evaluation: Evaluation) -> bytes:
    plt = _pyplot()
    scored = [a for a in evaluation.artifacts if a.quality]
    front_names = pareto_front(scored)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for artifact in scored:
        on_front = artifact.name in front_names
        axes.scatter(
            artifact.size_bytes / 1e6,
            max(artifact.quality["kld_mean"], 1e-9),
            marker="*" if on_front else "o",
            s=140 if on_front else 50,
            color="tab:red" if on_front else "tab:blue",
        )
        axes.annotate(
            artifact.name,
            (artifact.size_bytes / 1e6, max(artifact.quality["kld_mean"], 1e-9)),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    front = sorted(
        (a for a in scored if a.name in front_names), key=lambda a: a.size_bytes
    )
    if len(front) > 1:
        axes.plot(
            [a.size_bytes / 1e6 for a in front],
            [max(a.quality["kld_mean"], 1e-9) for a in front],
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label="Pareto front",
        )
        axes.legend()
    axes.set_yscale("log")
    axes.set_xlabel("size on disk (MB)")
    axes.set_ylabel("mean KL divergence to reference (nats)")
    axes.set_title("Size vs accuracy")
    axes.grid(True, which="both", alpha=0.3)
    data = _png(figure)
    plt.close(figure)
    return data


def _bars(
    evaluation: Evaluation,
    key: str,
    section: str,
    label: str,
    title: str,
    reference: float | None = None,
):
    plt = _pyplot()
    items = [
        (a.name, getattr(a, section)[key])
        for a in evaluation.artifacts
        if getattr(a, section)
    ]
    if not items:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.5 + 0.45 * len(items)))
    axes.barh([name for name, _ in items], [value for _, value in items])
    axes.invert_yaxis()
    if reference is not None:
        axes.axvline(reference, color="black", linestyle="--", label="reference")
        axes.legend()
    axes.set_xlabel(label)
    axes.set_title(title)
    axes.grid(True, axis="x", alpha=0.3)
    data = _png(figure)
    plt.close(figure)
    return data


def all_plots(evaluation: Evaluation) -> dict[str, bytes]:
    """Every figure that has data, by title."""
    plots = {"Size vs KL divergence": size_vs_kld(evaluation)}
    reference_ppl = evaluation.reference["perplexity"]
    for key, section, label, title, reference in (
        ("decode_tokens_per_s", "speed", "tokens/s", "Decode speed", None),
        ("prefill_tokens_per_s", "speed", "tokens/s", "Prefill speed", None),
        ("perplexity", "quality", "perplexity", "Perplexity", reference_ppl),
    ):
        data = _bars(evaluation, key, section, label, title, reference)
        if data is not None:
            plots[title] = data
    return plots
