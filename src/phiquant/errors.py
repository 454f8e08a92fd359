"""Errors that phiquant reports to its user as one line with a next step.

Every error carries its own exit code so that scripts can tell a bad argument
from a broken model file without parsing the message.
"""

from __future__ import annotations


class PhiquantError(Exception):
    """Base class: ``what`` happened, ``todo`` says what to do about it."""

    exit_code = 1

    def __init__(self, what: str, todo: str = "") -> None:
        self.what = what.rstrip(".")
        self.todo = todo
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.what}. {self.todo}".strip()


class UsageError(PhiquantError):
    """A command-line argument or API parameter is invalid."""

    exit_code = 2


class SourceError(PhiquantError):
    """The model to convert is missing, malformed or unsupported."""

    exit_code = 3


class BackendUnavailableError(PhiquantError):
    """A backend's optional libraries are not installed."""

    exit_code = 4


class OutputError(PhiquantError):
    """The output location cannot be written as asked."""

    exit_code = 5


class ArtifactError(PhiquantError):
    """An artifact is incomplete, corrupt or failed to build or run."""

    exit_code = 6
