"""The evaluation as a markdown report."""

from __future__ import annotations

from phiquant.evaluate.results import Evaluation
from phiquant.report.figures import reference_summary, table_rows


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown_report(evaluation: Evaluation) -> str:
    headers, rows = table_rows(evaluation)
    lines = [
        "# phiquant evaluation",
        "",
        reference_summary(evaluation),
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    long_context = evaluation.settings.get("long_context")
    if long_context:
        lines += [
            "",
            f"Long KLD: mean KL divergence on one {long_context['tokens']}-token "
            f"window past token {long_context['switch_at']} "
            f"({long_context['reason']}).",
        ]
    failures = [a for a in evaluation.artifacts if a.error]
    if failures:
        lines += ["", "## Failed artifacts", ""]
        lines += [f"- {a.name}: {a.error}" for a in failures]
    for note in evaluation.reference.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += [
        "",
        "Speed and memory were measured with each artifact in a process of its own "
        f"on this machine: prefill of {evaluation.settings['window_tokens']} tokens, "
        f"decode of {evaluation.settings['decode_tokens']} tokens, greedy.",
        "",
        f"Created {evaluation.created}.",
        "",
    ]
    return "\n".join(lines)
