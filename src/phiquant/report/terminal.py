"""Rich tables for the terminal."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from phiquant.api import QuantizeResult
from phiquant.backends import available_backends
from phiquant.evaluate.results import Evaluation
from phiquant.report.figures import (
    SPEED_HEADERS,
    format_bytes,
    reference_summary,
    table_rows,
)


def _shorten(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_quantize_table(
    console: Console, results: list[QuantizeResult], prompt: str | None
) -> None:
    title = f"Answers to {prompt!r}" if prompt else "Artifacts"
    table = Table(title=title, title_justify="left")
    table.add_column("target", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("bits/weight", justify="right")
    if prompt:
        table.add_column("answer (greedy)", overflow="fold", ratio=1)
        table.add_column("ended turn", justify="center")
    for result in results:
        row = [
            result.target.name,
            format_bytes(result.info.size_bytes),
            f"{result.info.bits_per_weight:.2f}",
        ]
        if prompt:
            answer = result.answer
            row += [
                _shorten(answer.text) if answer else "",
                "yes" if answer and answer.finish_reason == "stop" else "no",
            ]
        table.add_row(*row)
    console.print(table)
    folders = sorted({str(result.path.parent) for result in results})
    console.print(f"Artifacts in {', '.join(folders)}")
    for result in results:
        for note in result.notes:
            console.print(f"[dim]note: {note}[/]")


def _key_value_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        table.add_row(key, "" if value is None else str(value))
    return table


def _types_table(tensor_types: dict[str, int]) -> Table:
    total = sum(tensor_types.values()) or 1
    table = Table(title="Weights by stored type", title_justify="left")
    table.add_column("type")
    table.add_column("parameters", justify="right")
    table.add_column("share", justify="right")
    for name, count in tensor_types.items():
        table.add_row(name, f"{count:,}", f"{100 * count / total:.1f}%")
    return table


def print_inspection(console: Console, report: dict[str, Any]) -> None:
    summary = {
        key: report.get(key)
        for key in (
            "kind",
            "name",
            "path",
            "architecture",
            "family",
            "format",
            "runtime",
            "target",
        )
        if report.get(key) is not None
    }
    summary["size"] = format_bytes(report["size_bytes"])
    summary["parameters"] = f"{report['parameter_count']:,}"
    if report.get("bits_per_weight"):
        summary["bits per weight"] = f"{report['bits_per_weight']:.2f}"
    if report["kind"] == "source":
        summary["stop tokens"] = report["stop_tokens"]
        summary["end-of-turn token"] = report["end_of_turn_token"]
        summary["chat template"] = "present" if report["chat_template"] else "missing"
    console.print(_key_value_table("Model", summary))
    if "traits" in report:
        console.print(_key_value_table("Conversion traits", report["traits"]))
    if report.get("metadata"):
        console.print(_key_value_table("Metadata", report["metadata"]))
    console.print(_types_table(report["tensor_types"]))
    for note in report.get("notes", []):
        console.print(f"[dim]note: {note}[/]")


def print_targets(console: Console) -> None:
    table = Table(title="Targets (BACKEND:PRECISION)", title_justify="left")
    table.add_column("backend")
    table.add_column("runtime")
    table.add_column("precision → format")
    table.add_column("other formats")
    table.add_column("devices")
    for backend in available_backends():
        aliases = ", ".join(f"{p} → {q}" for p, q in backend.precision_aliases.items())
        others = [
            q for q in backend.formats if q not in backend.precision_aliases.values()
        ]
        table.add_row(
            backend.name,
            backend.runtime,
            aliases,
            ", ".join(others),
            backend.device_summary(),
        )
    console.print(table)


def print_evaluation(console: Console, evaluation: Evaluation) -> None:
    """Quality and speed as two tables, so each fits an 80-column terminal."""
    headers, rows = table_rows(evaluation)
    speed_columns = [i for i, h in enumerate(headers) if h in SPEED_HEADERS]
    quality_columns = [i for i in range(len(headers)) if i not in speed_columns]
    for title, columns in (
        ("Quality against the reference", quality_columns),
        ("Speed and memory", [0, *speed_columns]),
    ):
        if len(columns) < 2:
            continue
        table = Table(
            title=title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1),
        )
        for index in columns:
            justify = "left" if index == 0 else "right"
            table.add_column(
                headers[index],
                justify=justify,
                no_wrap=True,
                min_width=len(headers[index]),
            )
        for row in rows:
            table.add_row(*(row[index] for index in columns))
        console.print(table)
    console.print(f"[dim]{reference_summary(evaluation)}[/]")
    for note in evaluation.reference.get("notes", []):
        console.print(f"[dim]note: {note}[/]")
    for artifact in evaluation.artifacts:
        if artifact.error:
            console.print(f"[red]{artifact.name} failed: {artifact.error}[/]")


def print_devices(console: Console) -> None:
    from phiquant.devices import PROFILES

    table = Table(title="Device profiles", title_justify="left")
    for header in ("device", "targets", "memory", "context", "max KLD"):
        table.add_column(header, overflow="fold")
    for profile in PROFILES.values():
        table.add_row(
            profile.name,
            ", ".join(profile.targets),
            format_bytes(profile.memory_bytes),
            str(profile.context_tokens),
            f"{profile.max_kld:g}",
        )
    console.print(table)
