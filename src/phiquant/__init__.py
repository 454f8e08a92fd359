"""phiquant: Phi-family models to quantized edge artifacts, run and measured."""

import os
from importlib import metadata

# Idle OpenMP threads that spin cost llama.cpp about 10x decode speed on a busy
# machine. OpenMP reads this once, when a runtime first loads it, so it is set
# before any runtime is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = metadata.version("phiquant")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

from phiquant.api import inspect, load_artifact, quantize, run  # noqa: E402
from phiquant.errors import PhiquantError  # noqa: E402

__all__ = [
    "quantize",
    "run",
    "inspect",
    "load_artifact",
    "PhiquantError",
    "__version__",
]
