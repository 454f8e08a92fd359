"""Execution providers: which precision can be built for, and run on, which device.

The table mirrors what onnxruntime-genai's model builder lists as valid
(precision, execution provider) pairs, minus the pairs that build but do not
run. A target outside it is refused before any work starts.
"""

from __future__ import annotations

from typing import Any

from phiquant.errors import BackendUnavailableError, UsageError

DEFAULT_DEVICE = "cpu"
PROVIDER_NAMES = {
    "cpu": "CPU",
    "cuda": "CUDA",
    "dml": "DirectML",
    "webgpu": "WebGPU",
}
# Device -> precisions the builder makes for it and its runtime executes.
PRECISIONS_BY_DEVICE = {
    "cpu": ("fp32", "int8", "int4"),
    "cuda": ("fp32", "fp16", "int8", "int4"),
    "dml": ("fp16", "int4"),
    "webgpu": ("int8", "int4"),
}
# Why a pair is refused, where there is more to say than "the builder lacks it".
REFUSAL_REASONS = {
    ("fp16", "cpu"): "ONNX Runtime's CPU kernels fail on its Cast nodes when decoding",
}
# ONNX Runtime's name for each device's execution provider.
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}


def check_combination(precision: str, device: str) -> None:
    """Refuse a precision the chosen execution provider cannot build or run."""
    if precision in PRECISIONS_BY_DEVICE[device]:
        return
    provider = PROVIDER_NAMES[device]
    reason = REFUSAL_REASONS.get(
        (precision, device), "onnxruntime-genai's builder does not make that pair"
    )
    elsewhere = [d for d, ps in PRECISIONS_BY_DEVICE.items() if precision in ps]
    raise UsageError(
        f"onnx:{precision} cannot run on the {provider} provider ({reason})",
        f"On {device} use onnx:{{{','.join(PRECISIONS_BY_DEVICE[device])}}}"
        f"@{device}; onnx:{precision} runs on @{', @'.join(elsewhere)}",
    )


def provider_available(device: str) -> bool:
    """Whether the installed ONNX Runtime can run models on ``device``.

    onnxruntime-genai's own probes are not enough: its CPU wheel reports
    WebGPU as available and then fails to load a WebGPU model.
    """
    import onnxruntime

    return ORT_PROVIDERS[device] in onnxruntime.get_available_providers()


def config_device(genai_config: dict[str, Any]) -> str:
    """The device an artifact's genai_config.json asks for (``cpu`` if none)."""
    decoder = genai_config.get("model", {}).get("decoder", {})
    for entry in decoder.get("session_options", {}).get("provider_options", []):
        for key in entry:
            if key.lower() in PROVIDER_NAMES:
                return key.lower()
    return DEFAULT_DEVICE


def ensure_runnable(device: str) -> None:
    """Refuse to load an artifact whose provider this installation lacks."""
    if provider_available(device):
        return
    raise BackendUnavailableError(
        f"this onnxruntime-genai has no {PROVIDER_NAMES[device]} provider, "
        f"which the artifact was built for",
        f"Run it where ONNX Runtime has the {device} provider; `phiquant quantize "
        "--no-test` builds such targets without running them",
    )
