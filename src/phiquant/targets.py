"""Target strings such as ``gguf:int4`` or ``onnx:int4@cpu``.

A target names a backend, a precision (a generic name such as ``int4`` or a
backend-specific one such as ``Q5_K_M``) and optionally a device. Each backend
decides which precisions it accepts; this module only splits the string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from phiquant.errors import UsageError

GENERIC_PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")

# Backend and device names are case-insensitive, like precisions.
_TARGET_PATTERN = re.compile(
    r"^(?P<backend>[a-z]+):(?P<precision>[A-Za-z0-9_]+)(?:@(?P<device>[a-z0-9]+))?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TargetSpec:
    """A parsed but not yet validated target string."""

    backend: str
    precision: str
    device: str | None = None

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        match = _TARGET_PATTERN.match(text.strip())
        if not match:
            raise UsageError(
                f"invalid target {text!r}",
                "Write BACKEND:PRECISION[@DEVICE], e.g. gguf:int4, gguf:Q5_K_M "
                "or onnx:int4@cpu; `phiquant targets` lists them all",
            )
        device = match["device"]
        return cls(
            match["backend"].lower(), match["precision"], device and device.lower()
        )


@dataclass(frozen=True)
class Target:
    """A validated target: what one artifact folder will hold.

    ``quant`` is the backend's own name for the format (``Q4_K_M`` for GGUF),
    ``precision`` the generic class it belongs to (``int4``).
    """

    backend: str
    quant: str
    precision: str
    device: str | None = None
    options: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """The canonical target string, e.g. ``gguf:Q4_K_M``."""
        suffix = f"@{self.device}" if self.device else ""
        return f"{self.backend}:{self.quant}{suffix}"

    @property
    def slug(self) -> str:
        """A folder name for the artifact, e.g. ``gguf-q4_k_m``."""
        suffix = f"-{self.device}" if self.device else ""
        return f"{self.backend}-{self.quant.lower()}{suffix}"
