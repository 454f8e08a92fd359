"""The interface every backend implements: build, describe, load, run, score.

A backend turns a :class:`ModelSource` into an artifact folder for one runtime
(llama.cpp, ONNX Runtime GenAI, OpenVINO, MLX) and loads such folders back
through that runtime. Everything else in phiquant (the CLI, evaluation,
reports) talks to backends only through this module.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from phiquant.errors import ArtifactError, BackendUnavailableError, UsageError
from phiquant.sources import ModelSource
from phiquant.targets import Target, TargetSpec

# A text that exercises digits, spacing, punctuation and non-ASCII letters,
# tokenized by the source and by each runtime after every build.
TOKENIZER_PROBE = (
    "Hello world! The year 2024 had 366 days; élan, naïve café — 東京 🙂\n"
    "    indented   spaces\tand tabs, it's can't we'll 3.14159 x=y+1"
)

# Reports progress as (completed, total, description); total may be None.
ProgressFn = Callable[[int, "int | None", str], None]


def no_progress(done: int, total: int | None, what: str) -> None:
    """A progress callback that ignores progress."""


def check_tokenizer_parity(
    source: ModelSource, runtime: str, encode: Callable[[str], Sequence[int]]
) -> None:
    """Refuse an artifact whose runtime splits the probe text unlike the source.

    ``encode`` is the runtime's own tokenizer, adding no special tokens.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source.path / "tokenizer.json"))
    expected = tokenizer.encode(TOKENIZER_PROBE, add_special_tokens=False).ids
    actual = [int(token) for token in encode(TOKENIZER_PROBE)]
    if actual != expected:
        raise ArtifactError(
            f"{runtime} tokenizes text differently from the source tokenizer "
            f"({len(actual)} vs {len(expected)} tokens on a probe text)",
            "Its tokenizer did not convert faithfully; please report this model",
        )


@dataclass
class BuildResult:
    """What a backend reports after writing an artifact's files."""

    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)


@dataclass
class ArtifactInfo:
    """Size and precision facts about an artifact, read from its files."""

    format: str
    size_bytes: int
    parameter_count: int
    weight_bytes: int
    tensor_types: dict[str, int]  # type name -> parameter count
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        if not self.parameter_count:
            return float("nan")
        return 8 * self.weight_bytes / self.parameter_count


@dataclass
class ChatResult:
    """A finished chat reply: its text and why generation ended."""

    text: str
    n_tokens: int
    finish_reason: str  # "stop" at an end-of-turn token, "length" at the limit


class ChatStream:
    """Iterate to receive text pieces; ``result`` is set once exhausted.

    ``finish`` reports (tokens generated, finish reason) after the last piece;
    ``on_close`` callbacks run when iteration ends, however it ends.
    """

    def __init__(self, pieces: Iterator[str], finish: Callable[[], tuple[int, str]]):
        self._pieces = pieces
        self._finish = finish
        self._text: list[str] = []
        self._on_close: list[Callable[[], None]] = []
        self.result: ChatResult | None = None

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self._pieces:
                self._text.append(piece)
                yield piece
            n_tokens, reason = self._finish()
            self.result = ChatResult("".join(self._text), n_tokens, reason)
        finally:
            for callback in self._on_close:
                callback()

    def collect(self) -> ChatResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


class Runner(abc.ABC):
    """A loaded artifact, ready to chat with and to score token sequences."""

    @property
    @abc.abstractmethod
    def stop_token_ids(self) -> set[int]:
        """Token ids at which the runtime itself ends a reply."""

    @abc.abstractmethod
    def chat(self, messages: list[dict[str, str]], max_tokens: int = 128) -> ChatStream:
        """Greedy reply through the runtime's own chat template and stop rules."""

    @abc.abstractmethod
    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits for every position of ``token_ids``: float32 [len, vocab]."""

    @abc.abstractmethod
    def generate_ids(
        self, prompt_ids: Sequence[int], max_new_tokens: int
    ) -> Iterator[int]:
        """Greedy continuation of ``prompt_ids``, one id per step, ignoring stop tokens.

        Used to time prefill (until the first id) and decode (the rest).
        """

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """The runtime's own tokenization of plain text (no special tokens added)."""

    def close(self) -> None:  # noqa: B027 - runtimes without resources need nothing
        """Release the runtime's memory."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Backend(abc.ABC):
    """One runtime's artifact format."""

    name: ClassVar[str]
    runtime: ClassVar[str]
    # The pip extra that installs this backend's libraries.
    extra: ClassVar[str]
    # Generic precision -> this backend's own format name.
    precision_aliases: ClassVar[dict[str, str]]
    # Every format name this backend builds -> its generic precision.
    formats: ClassVar[dict[str, str]]
    devices: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def missing_libraries(self) -> list[str]:
        """Import names of required libraries that are not installed."""

    def ensure_available(self) -> None:
        missing = self.missing_libraries()
        if missing:
            raise BackendUnavailableError(
                f"the {self.name} backend needs {', '.join(missing)}, "
                "which is not installed",
                f"Run: pip install 'phiquant[{self.extra}]'",
            )

    def resolve(self, spec: TargetSpec) -> Target:
        """Validate a target string's precision and device for this backend."""
        lookup = {name.lower(): name for name in self.formats}
        quant = self.precision_aliases.get(spec.precision.lower()) or lookup.get(
            spec.precision.lower()
        )
        if quant is None:
            choices = ", ".join([*self.precision_aliases, *self.formats])
            raise UsageError(
                f"{self.name} has no precision {spec.precision!r}",
                f"Choose one of: {choices}",
            )
        if spec.device and spec.device not in self.devices:
            shown = ", ".join(self.devices) or "none"
            raise UsageError(
                f"{self.name} targets take no device {spec.device!r}",
                f"Devices for {self.name}: {shown}",
            )
        return Target(self.name, quant, self.formats[quant], spec.device)

    def validate(self, source: ModelSource, target: Target) -> None:
        """Refuse, before anything is built, options this backend cannot honour.

        Backends with options override this; by default there are none.
        """
        if target.options:
            raise UsageError(
                f"the {self.name} backend takes no options "
                f"({', '.join(sorted(target.options))})",
                "Remove the --option settings for it",
            )

    def device_summary(self) -> str:
        """The ``@DEVICE`` suffixes this backend takes, for `phiquant targets`."""
        return ", ".join(f"@{device}" for device in self.devices) or "-"

    def can_run(self, target: Target) -> bool:
        """Whether this machine can load ``target``'s artifacts (e.g. has a GPU)."""
        return True

    def owns(self, path: Path) -> bool:
        """Whether ``path`` (without a manifest) looks like this backend's artifact."""
        return False

    @abc.abstractmethod
    def build(
        self,
        source: ModelSource,
        target: Target,
        out_dir: Path,
        progress: ProgressFn = no_progress,
    ) -> BuildResult:
        """Write the artifact's files into the empty folder ``out_dir``."""

    @abc.abstractmethod
    def describe(self, artifact_dir: Path) -> ArtifactInfo:
        """Read size and tensor precision facts from an artifact folder."""

    @abc.abstractmethod
    def load(self, artifact_dir: Path, *, context_tokens: int = 2048) -> Runner:
        """Open an artifact folder in its runtime."""
