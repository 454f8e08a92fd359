"""The evaluation as one self-contained HTML file with its plots embedded."""

from __future__ import annotations

import base64
import html

from phiquant.evaluate.results import Evaluation
from phiquant.report.figures import reference_summary, table_rows
from phiquant.report.plots import all_plots

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; margin: 1em 0; }
.note { color: #555; }
"""


def html_report(evaluation: Evaluation) -> str:
    headers, rows = table_rows(evaluation)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    images = "".join(
        f"<h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for title, png in all_plots(evaluation).items()
    )
    failures = "".join(
        f"<li>{html.escape(a.name)}: {html.escape(a.error)}</li>"
        for a in evaluation.artifacts
        if a.error
    )
    notes = "".join(
        f'<p class="note">Note: {html.escape(n)}</p>'
        for n in evaluation.reference.get("notes", [])
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<title>phiquant evaluation</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>phiquant evaluation</h1>"
        f"<p>{html.escape(reference_summary(evaluation))}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        + (f"<h2>Failed artifacts</h2><ul>{failures}</ul>" if failures else "")
        + notes
        + images
        + f'<p class="note">Created {html.escape(evaluation.created)}.</p>'
        "</body></html>\n"
    )
