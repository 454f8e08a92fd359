"""Where models come from: the built-in demo, a local folder or a hub id."""

from __future__ import annotations

from pathlib import Path

from phiquant.errors import SourceError
from phiquant.sources.demo import DEMO_NAME, ensure_demo_checkpoint
from phiquant.sources.hub import download_snapshot, looks_like_hub_id
from phiquant.sources.model import ModelSource, load_model_folder

__all__ = ["ModelSource", "open_source", "DEMO_NAME"]


def open_source(
    spec: str | Path = DEMO_NAME,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
) -> ModelSource:
    """Resolve ``spec`` (``demo``, a folder or a hub id) to a checked source."""
    text = str(spec)
    if text == DEMO_NAME:
        return load_model_folder(ensure_demo_checkpoint(), name=DEMO_NAME, kind="demo")

    folder = Path(text).expanduser()
    if folder.is_dir():
        return load_model_folder(
            folder.resolve(),
            name=folder.resolve().name,
            kind="local",
            allow_pickle=allow_pickle,
        )
    if folder.exists():
        raise SourceError(
            f"{folder} is a file, not a model folder",
            "Pass the folder that holds config.json and the weights",
        )
    if looks_like_hub_id(text) and not text.startswith((".", "/", "~")):
        snapshot = download_snapshot(text, revision)
        return load_model_folder(
            snapshot,
            name=text.split("/")[-1],
            kind="hub",
            hub_id=text,
            revision=revision or snapshot.name,
            allow_pickle=allow_pickle,
        )
    raise SourceError(
        f"no model folder at {text}",
        "Pass `demo`, a local Hugging Face folder or a hub id such as "
        "microsoft/Phi-3-mini-4k-instruct",
    )
