"""Presenting results: terminal tables, JSON, markdown and HTML reports."""

from __future__ import annotations

from pathlib import Path

from phiquant.artifacts import output_errors
from phiquant.evaluate.results import RESULTS_NAME, Evaluation


def write_reports(evaluation: Evaluation, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.md and report.html into ``out_dir``."""
    from phiquant.report.html import html_report
    from phiquant.report.markdown import markdown_report

    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / RESULTS_NAME,
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    reports = {
        "markdown": markdown_report(evaluation),
        "html": html_report(evaluation),
    }
    with output_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        evaluation.save(paths["json"])
        for kind, text in reports.items():
            partial = paths[kind].with_name(paths[kind].name + ".partial")
            partial.write_text(text, encoding="utf-8")
            partial.replace(paths[kind])
    return paths
