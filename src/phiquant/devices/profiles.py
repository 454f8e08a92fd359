"""Device profiles: what each kind of hardware runs and how much memory it has.

Each profile lists the targets worth building for it, best first within each
runtime, and a typical memory budget for the model (RAM left to one app on a
phone, VRAM on a GPU). Users override the budget with ``--ram``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from phiquant.errors import UsageError

GB = 1000**3


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    targets: tuple[str, ...]
    memory_bytes: int
    context_tokens: int
    # Largest mean KL divergence to the fp32 original this device class
    # usually accepts; small devices trade more accuracy for fitting at all.
    max_kld: float

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(target.split(":")[0] for target in self.targets))


PROFILES: dict[str, DeviceProfile] = {
    profile.name: profile
    for profile in (
        DeviceProfile(
            "phone",
            "Android/iOS phone: llama.cpp or ONNX Runtime Mobile, INT4",
            ("gguf:int4", "gguf:Q4_0", "onnx:int4@cpu"),
            memory_bytes=3 * GB,
            context_tokens=2048,
            max_kld=0.1,
        ),
        DeviceProfile(
            "iot",
            "IoT board (Raspberry Pi class): llama.cpp, INT4",
            ("gguf:Q4_0", "gguf:int4"),
            memory_bytes=2 * GB,
            context_tokens=1024,
            max_kld=0.2,
        ),
        DeviceProfile(
            "ai-pc-intel",
            "Intel AI PC (CPU/GPU/NPU): OpenVINO, INT4 to FP16",
            ("openvino:int4", "openvino:int8", "openvino:fp16"),
            memory_bytes=8 * GB,
            context_tokens=4096,
            max_kld=0.05,
        ),
        DeviceProfile(
            "ai-pc-qualcomm",
            "Snapdragon AI PC: ONNX Runtime (QNN / CPU), INT4 to INT8",
            ("onnx:int4@cpu", "onnx:int8@cpu"),
            memory_bytes=8 * GB,
            context_tokens=4096,
            max_kld=0.05,
        ),
        DeviceProfile(
            "mac",
            "Apple silicon Mac: MLX, INT4 to BF16 (llama.cpp as an alternative)",
            ("mlx:int4", "mlx:int8", "mlx:bf16", "gguf:int4"),
            memory_bytes=8 * GB,
            context_tokens=4096,
            max_kld=0.05,
        ),
        DeviceProfile(
            "nvidia-gpu",
            "NVIDIA GPU: ONNX Runtime CUDA or llama.cpp, INT4 to FP16",
            ("onnx:int4@cuda", "onnx:fp16@cuda", "gguf:int8", "gguf:fp16"),
            memory_bytes=12 * GB,
            context_tokens=8192,
            max_kld=0.02,
        ),
        DeviceProfile(
            "cpu-server",
            "x86 server CPU: llama.cpp, ONNX Runtime or OpenVINO, INT8 to FP32",
            ("gguf:int8", "onnx:int8@cpu", "openvino:int8", "gguf:fp16"),
            memory_bytes=32 * GB,
            context_tokens=8192,
            max_kld=0.01,
        ),
    )
}


def get_profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise UsageError(
            f"unknown device {name!r}", f"Choose one of: {', '.join(PROFILES)}"
        )
    return PROFILES[name]


def parse_size(text: str) -> int:
    """``4GB``, ``512MB``, ``3.5GiB`` or plain bytes, as a number of bytes."""
    units = {
        "": 1,
        "b": 1,
        "kb": 1000,
        "mb": 1000**2,
        "gb": 1000**3,
        "tb": 1000**4,
        "kib": 1024,
        "mib": 1024**2,
        "gib": 1024**3,
        "tib": 1024**4,
    }
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number) :]
    try:
        value = float(number)
    except ValueError as error:
        raise UsageError(
            f"cannot read the size {text!r}", "Write it like 4GB, 512MB or 3.5GiB"
        ) from error
    if unit not in units or not math.isfinite(value):
        raise UsageError(f"cannot read the size {text!r}", "Write it like 4GB or 512MB")
    if value * units[unit] < 1:
        raise UsageError(
            f"the size {text!r} is not positive", "Give a memory budget such as 4GB"
        )
    return int(value * units[unit])
