"""Builders of small model folders for tests, from real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import PHI_CONFIGS


def real_config(name: str) -> dict:
    """A published Phi config from shared/data/phi-configs."""
    return json.loads((PHI_CONFIGS / f"{name}.config.json").read_text())


def copy_tokenizer(source_dir: Path, dest: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source_dir / name).exists():
            shutil.copy(source_dir / name, dest / name)


def write_sharded_copy(source_dir: Path, dest: Path, shards: int = 2) -> list[str]:
    """Re-save a single-file checkpoint as ``shards`` safetensors files plus index."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dest.mkdir(parents=True)
    with safe_open(source_dir / "model.safetensors", framework="pt") as handle:
        names = list(handle.keys())
        tensors = {name: handle.get_tensor(name) for name in names}
    weight_map = {}
    shard_names = [
        f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)
    ]
    for index, shard_name in enumerate(shard_names):
        part = {name: tensors[name] for name in names[index::shards]}
        save_file(part, dest / shard_name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard_name))
    (dest / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    for name in ("config.json", "generation_config.json"):
        shutil.copy(source_dir / name, dest / name)
    copy_tokenizer(source_dir, dest)
    return shard_names


def phiquant_cli(*args: str, env: dict | None = None):
    """Run the installed command line as a user would; capture its output."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "phiquant", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )
