"""A rich progress bar behind phiquant's plain progress callback."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class RichProgress:
    """Callable as ``progress(done, total, description)``; a context manager."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            # Piped or logged output gets no bar, and no blank line where it was.
            disable=not console.is_terminal,
        )
        self._task = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int | None, description: str) -> None:
        if self._task is None:
            self._task = self._progress.add_task(description, total=total)
        self._progress.update(
            self._task, completed=done, total=total, description=description
        )
