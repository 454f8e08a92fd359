"""Pickle checkpoints (pytorch_model.bin), read only when the user opts in.

Unpickling can run code, so phiquant refuses these files unless asked with
``--allow-pickle``. Even then it reads them with torch's restricted
``weights_only`` unpickler, converts them once to safetensors in the cache
and works from that copy; the original folder is not touched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from phiquant.cache import cache_root
from phiquant.errors import SourceError

PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
_DONE_MARKER = "phiquant-converted.json"


def pickle_files(folder: Path) -> list[Path]:
    """The pickle weight files of a checkpoint folder, shards included."""
    index = folder / PICKLE_INDEX
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as error:
            raise SourceError(f"{index} is malformed ({error})", "") from error
        return [folder / name for name in names]
    single = folder / PICKLE_SINGLE
    return [single] if single.exists() else []


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def convert_to_safetensors(folder: Path) -> Path:
    """A cached copy of ``folder`` with its pickle weights as safetensors."""
    import torch
    from safetensors.torch import save_file

    files = pickle_files(folder)
    missing = [path.name for path in files if not path.exists()]
    if missing:
        raise SourceError(
            f"{folder} lacks weight file(s) {', '.join(missing)}",
            "Finish the download, then run again",
        )
    dest = cache_root() / "converted" / f"{folder.name}-{_fingerprint(files)}"
    if (dest / _DONE_MARKER).exists():
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
    try:
        tensors = {}
        for path in files:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # torch raises many types for bad files
                raise SourceError(
                    f"cannot read {path} ({type(error).__name__}: {error})",
                    "The file is corrupt or not a plain state dict",
                ) from error
            # Tied weights share storage, which safetensors refuses to save twice.
            tensors.update({name: t.clone().contiguous() for name, t in state.items()})
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
        for path in folder.iterdir():
            keep = path.is_file() and not path.name.startswith("pytorch_model")
            if keep and path.suffix in (".json", ".jinja", ".model", ".txt"):
                shutil.copy(path, staging / path.name)
        (staging / _DONE_MARKER).write_text(json.dumps({"from": str(folder)}))
        staging.chmod(0o755)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
