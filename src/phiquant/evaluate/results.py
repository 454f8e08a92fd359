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
    # SHA-256 of the artifact's manifest when scored: tells whether the folder
    # still holds the same build (None for bare model files).
    manifest_sha256: str | None = None


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
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
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
            evaluation = cls.from_dict(json.loads(path.read_text()))
            _check_figures(evaluation)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            detail = f"missing {error}" if isinstance(error, KeyError) else error
            raise UsageError(
                f"{path} is not a phiquant results file ({detail})",
                "Write it again with `phiquant eval ARTIFACT... --out DIR`",
            ) from error
        return evaluation


def _check_figures(evaluation: Evaluation) -> None:
    """Raise ValueError where a stored figure is not a number."""
    for artifact in evaluation.artifacts:
        for group in (artifact.quality, artifact.speed):
            if group is None:
                continue
            if not isinstance(group, dict):
                raise ValueError(f"{artifact.name}'s figures are not a mapping")
            for name, value in group.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{artifact.name}'s {name} is {value!r}")


def carry_over_earlier(evaluation: Evaluation, results_path: Path) -> list[str]:
    """Add the artifacts an earlier results file scored on the same yardstick.

    Evaluating into a folder that already holds results (a second
    ``phiquant quantize`` into the demo folder, say) keeps the earlier
    artifacts in the report, provided they were scored against the same
    reference source on the same windows and their folders still hold the
    same builds. Returns the names carried over.
    """
    from phiquant.artifacts import MANIFEST_NAME, sha256_file

    if not results_path.exists():
        return []
    try:
        earlier = Evaluation.load(results_path)
    except UsageError:
        return []  # unreadable: the new results replace it
    same_yardstick = (
        earlier.settings == evaluation.settings
        and earlier.reference["source"]["content_sha256"]
        == evaluation.reference["source"]["content_sha256"]
    )
    if not same_yardstick:
        return []

    scored_now = {Path(a.path).resolve() for a in evaluation.artifacts}
    kept = []
    for artifact in earlier.artifacts:
        folder = Path(artifact.path)
        manifest = folder / MANIFEST_NAME
        unchanged = (
            artifact.manifest_sha256 is not None
            and manifest.is_file()
            and sha256_file(manifest) == artifact.manifest_sha256
        )
        if unchanged and folder.resolve() not in scored_now:
            kept.append(artifact)
    evaluation.artifacts[:0] = kept
    if kept:
        evaluation.reference.setdefault("notes", []).append(
            f"{', '.join(a.name for a in kept)}: scored earlier ({earlier.created}) "
            "on the same windows against the same reference, and kept"
        )
    return [a.name for a in kept]
