"""Benchmark: wall time of the full four-format evaluation of the demo.

Builds (once) the demo in GGUF F16/Q8_0/Q4_K_M and every other backend's
int4 and int8, then times one `phiquant eval` over all of them: reference,
16 windows of 512 tokens per artifact, and speed/memory runs. Prints the
figures; it asserts nothing.

Run: `python benchmarks/eval_demo.py [OUT_DIR] [WINDOWS]` (default 16 windows).
MLX artifacts are built with float32 scales: on Linux, mlx's CPU kernels are
very slow and imprecise with the default bf16 scales (see the README).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from phiquant import api
from phiquant.backends import REGISTRY, resolve_target

TARGETS = [
    "gguf:fp16",
    "gguf:int8",
    "gguf:int4",
    "onnx:int8",
    "onnx:int4",
    "openvino:int8",
    "openvino:int4",
    "mlx:int8",
    "mlx:int4",
]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "phiquant-out/benchmark")
    windows = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    targets = [t for t in TARGETS if t.split(":")[0] in REGISTRY]
    missing = [t for t in targets if not (out / resolve_target(t).slug).exists()]
    if missing:
        start = time.perf_counter()
        options = (
            {"mlx": {"dtype": "float32"}} if any("mlx" in t for t in missing) else {}
        )
        api.quantize("demo", missing, out=out, prompt=None, options=options)
        print(f"built {len(missing)} artifacts in {time.perf_counter() - start:.0f} s")

    artifacts = [out / resolve_target(t).slug for t in targets]
    start = time.perf_counter()
    evaluation, paths = api.evaluate(artifacts, out=out, windows=windows)
    wall_s = time.perf_counter() - start

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    print(f"evaluated {len(artifacts)} artifacts ({', '.join(targets)})")
    print(f"{windows} windows of 512 tokens, speed runs of 512 + 128 tokens")
    print(f"full evaluation wall time: {wall_s:.0f} s ({wall_s / 60:.1f} min)")
    for artifact in evaluation.artifacts:
        quality = artifact.quality or {}
        speed = artifact.speed or {}
        print(
            f"  {artifact.name:16} KLD {quality.get('kld_mean', float('nan')):.2e}  "
            f"decode {speed.get('decode_tokens_per_s', float('nan')):6.1f} tok/s  "
            f"{artifact.error or ''}"
        )
    print(f"reports: {paths['html']}")


if __name__ == "__main__":
    main()
