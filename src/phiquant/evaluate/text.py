"""The evaluation text and the token windows every artifact is scored on."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from phiquant.errors import UsageError

DEFAULT_TEXT = "wikitext-2-test.raw"


def load_text(path: str | Path | None = None) -> str:
    """The evaluation text: a user file, or WikiText-2 test shipped with phiquant."""
    if path is None:
        return (
            resources.files("phiquant.data").joinpath(DEFAULT_TEXT).read_text("utf-8")
        )
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"no text file at {path}", "Pass a UTF-8 text file with --text"
        )
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start})",
            "Pass a UTF-8 text file with --text",
        ) from error


def token_windows(token_ids: list[int], window: int, count: int) -> list[list[int]]:
    """``count`` consecutive, non-overlapping windows of ``window`` tokens."""
    available = len(token_ids) // window
    if available < count:
        raise UsageError(
            f"the text has {len(token_ids)} tokens, too few for {count} windows "
            f"of {window}",
            "Use a longer text or fewer/shorter windows",
        )
    return [token_ids[i * window : (i + 1) * window] for i in range(count)]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
