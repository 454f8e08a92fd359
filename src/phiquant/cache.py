"""Where phiquant keeps what it can rebuild: the demo model, reference logits."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$PHIQUANT_CACHE``, else ``phiquant`` in ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    if custom := os.environ.get("PHIQUANT_CACHE"):
        return Path(custom)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "phiquant"
