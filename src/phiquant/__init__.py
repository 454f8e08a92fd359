"""phiquant: Phi-family models to quantized edge artifacts, run and measured."""

from importlib import metadata

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
