"""The registry of backends, one per runtime.

Backends are imported lazily so that a missing optional library only matters
when its backend is used.
"""

from __future__ import annotations

import importlib

from phiquant.backends.base import Backend
from phiquant.errors import UsageError
from phiquant.targets import Target, TargetSpec

# Backend name -> "module:class". Each module imports its runtime lazily.
REGISTRY = {
    "gguf": "phiquant.backends.gguf:GGUFBackend",
    "openvino": "phiquant.backends.openvino:OpenVINOBackend",
    "onnx": "phiquant.backends.onnx:ONNXBackend",
    "mlx": "phiquant.backends.mlx:MLXBackend",
}
# Formats on the roadmap, so that a target naming one gets a precise answer.
PLANNED: dict[str, str] = {}

_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """Return the backend called ``name`` (``gguf``, ...)."""
    if name not in REGISTRY:
        if name in PLANNED:
            raise UsageError(
                f"the {name} backend ({PLANNED[name]}) is not available in this "
                "phiquant version yet",
                f"Available backends: {', '.join(REGISTRY)}",
            )
        raise UsageError(
            f"unknown backend {name!r}", f"Available backends: {', '.join(REGISTRY)}"
        )
    if name not in _instances:
        module_name, class_name = REGISTRY[name].split(":")
        backend_class = getattr(importlib.import_module(module_name), class_name)
        _instances[name] = backend_class()
    return _instances[name]


def resolve_target(text: str) -> Target:
    """Parse and validate a target string such as ``gguf:int4``."""
    spec = TargetSpec.parse(text)
    return get_backend(spec.backend).resolve(spec)


def available_backends() -> list[Backend]:
    return [get_backend(name) for name in REGISTRY]
