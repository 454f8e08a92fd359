"""Evaluation results: what `phiquant eval` stores and the reports read."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phiquant.errors import UsageError

RESULTS_NAME = "results.json"
RESULTS_VERSION = 1


@dataclass
class ArtifactEvaluation:
    """One artifact's figures; ``error`` says why some are missing."""

    name: str
    path: str
    backend: str
    format: str
    precision: str
    size_bytes: int
    parameter_count: int
    bits_per_weight: float
    quality: dict[str, float] | None = None
    long_context: dict[str, Any] | None = None
    speed: dict[str, float] | None = None
    error: str | None = None


@dataclass
class Evaluation:
    """All artifacts scored on the same windows against one reference."""

    reference: dict[str, Any]
    settings: dict[str, Any]
    artifacts: list[ArtifactEvaluation] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"
        )
    )
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"results_version": RESULTS_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        fields = {k: v for k, v in data.items() if k != "results_version"}
        fields["artifacts"] = [ArtifactEvaluation(**a) for a in fields["artifacts"]]
        return cls(**fields)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> Evaluation:
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_NAME
        if not path.exists():
            raise UsageError(
                f"no evaluation results at {path}",
                "Run `phiquant eval ARTIFACT... --out DIR` first",
            )
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UsageError(
                f"{path} is not a phiquant results file ({error})", ""
            ) from error
