"""Speed and memory of one artifact, measured in a process of its own.

A fresh process per artifact keeps one runtime's caches, threads and memory
from colouring another's figures, and makes peak resident memory mean "this
artifact loaded and generating". Run as
``python -m phiquant.evaluate.speed ARTIFACT PROMPT_IDS_JSON RESULT_JSON``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from phiquant.errors import ArtifactError

# Generous: MLX's quantized matmuls on Linux CPU decode at under 1 token/s.
TIMEOUT_S = 1800


def _peak_rss_bytes() -> int:
    # Linux keeps ru_maxrss across exec, so a child started by a big parent
    # would report the parent's peak; VmHWM belongs to this program alone.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure_here(artifact: Path, prompt_ids: list[int], decode_tokens: int) -> dict:
    """Load, prefill ``prompt_ids`` and decode ``decode_tokens`` greedily; time it."""
    from phiquant.api import load_artifact

    start = time.perf_counter()
    runner = load_artifact(artifact, context_tokens=len(prompt_ids) + decode_tokens + 8)
    loaded = time.perf_counter()
    stamps = []
    for _ in runner.generate_ids(prompt_ids, decode_tokens):
        stamps.append(time.perf_counter())
    runner.close()

    if len(stamps) < 2:
        raise ArtifactError(f"{artifact} generated {len(stamps)} tokens", "")
    ttft = stamps[0] - loaded
    return {
        "load_s": loaded - start,
        "time_to_first_token_s": ttft,
        # The first token's time is the prompt's prefill plus one decode step.
        "prefill_tokens_per_s": len(prompt_ids) / ttft,
        "decode_tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "prompt_tokens": len(prompt_ids),
        "decode_tokens": len(stamps),
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def measure_in_subprocess(
    artifact: Path, prompt_ids: list[int], decode_tokens: int
) -> dict[str, Any]:
    """Run :func:`measure_here` in a fresh Python process and return its figures."""
    with tempfile.TemporaryDirectory(prefix="phiquant-speed-") as tmp:
        prompt_path, result_path = Path(tmp) / "prompt.json", Path(tmp) / "result.json"
        prompt_path.write_text(json.dumps(prompt_ids))
        command = [
            sys.executable,
            "-m",
            "phiquant.evaluate.speed",
            str(artifact),
            str(prompt_path),
            str(result_path),
            str(decode_tokens),
        ]
        try:
            finished = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired as error:
            raise ArtifactError(
                f"speed measurement of {artifact} took over {TIMEOUT_S} s", ""
            ) from error
        if finished.returncode != 0 or not result_path.exists():
            last_line = (finished.stderr.strip().splitlines() or ["no output"])[-1]
            raise ArtifactError(
                f"speed measurement of {artifact} failed: {last_line}", ""
            )
        return json.loads(result_path.read_text())


def _main(argv: list[str]) -> None:
    artifact, prompt_path, result_path, decode_tokens = argv
    prompt_ids = json.loads(Path(prompt_path).read_text())
    figures = measure_here(Path(artifact), prompt_ids, int(decode_tokens))
    Path(result_path).write_text(json.dumps(figures))


if __name__ == "__main__":
    _main(sys.argv[1:])
