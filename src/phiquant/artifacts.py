"""Artifact folders: the manifest, file hashes and atomic creation.

An artifact is a folder that its runtime opens unchanged, plus
``phiquant.json``: where it came from, how it was made and the sha256 of every
file. Folders are built under a temporary name beside the destination and
renamed into place only when complete, so an interrupted run never leaves a
folder that looks finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from phiquant.errors import ArtifactError, OutputError

MANIFEST_NAME = "phiquant.json"
MANIFEST_VERSION = 1
# Libraries whose versions decide what an artifact contains.
RECORDED_LIBRARIES = (
    "phiquant",
    "torch",
    "transformers",
    "safetensors",
    "gguf",
    "llama_cpp_python",
    "onnxruntime-genai",
    "optimum-intel",
    "nncf",
    "openvino",
    "mlx",
    "mlx-lm",
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def list_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` but the manifest, with size and sha256."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST_NAME:
            continue
        files[relative] = {
            "size_bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    return files


def write_manifest(folder: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Hash the folder's files and write ``phiquant.json`` beside them."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
        "versions": library_versions(),
        "files": list_files(folder),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_artifact_json(folder: Path, name: str, missing: str, todo: str) -> Any:
    """A JSON file of an artifact folder, or one clear error if absent or corrupt."""
    path = Path(folder) / name
    if not path.exists():
        raise ArtifactError(f"{folder} {missing}", todo)
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(
            f"{path} is corrupt ({error})", "Rebuild the artifact"
        ) from error


# Manifest entries every command relies on.
_TARGET_KEYS = ("name", "backend", "format", "precision")


def read_manifest(folder: Path) -> dict[str, Any]:
    """An artifact's manifest, refused with one clear error if incomplete."""
    manifest = read_artifact_json(
        folder,
        MANIFEST_NAME,
        f"is not a phiquant artifact (no {MANIFEST_NAME})",
        "Pass a folder made by `phiquant quantize`",
    )
    target = manifest.get("target") if isinstance(manifest, dict) else None
    missing = [] if isinstance(target, dict) else ["target"]
    missing += [f"target.{key}" for key in _TARGET_KEYS if target and key not in target]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        missing.append("files")
    if missing:
        raise ArtifactError(
            f"{Path(folder) / MANIFEST_NAME} is incomplete (no {', '.join(missing)})",
            "Rebuild the artifact with `phiquant quantize ... --force`",
        )
    return manifest


def check_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Return one line per file that is missing, extra or changed."""
    problems = []
    actual = {
        p.relative_to(folder).as_posix(): p
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }
    for name, entry in manifest["files"].items():
        path = actual.pop(name, None)
        if path is None:
            problems.append(f"missing: {name}")
        elif path.stat().st_size != entry["size_bytes"]:
            problems.append(f"size differs: {name}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"content differs: {name}")
    problems += [f"not in manifest: {name}" for name in sorted(actual)]
    return problems


@contextlib.contextmanager
def output_errors(path: Path) -> Iterator[None]:
    """Turn a failure to write ``path`` into one clear OutputError."""
    try:
        yield
    except OSError as error:
        raise OutputError(
            f"cannot write to {path} ({error.strerror or error})",
            "Choose another output path: one you can write to, with free space",
        ) from error


def refuse_inside(dest: Path, protected: Path | None) -> None:
    """Refuse an output that would write into, or replace, the ``protected`` source."""
    if protected is None:
        return
    dest, protected = Path(dest).resolve(), Path(protected).resolve()
    if dest == protected or protected in dest.parents:
        raise OutputError(
            f"output {dest} lies inside the source folder {protected}",
            "phiquant never writes into a source; choose another --out",
        )
    if dest in protected.parents:
        raise OutputError(
            f"output {dest} holds the source folder {protected}",
            "Replacing it would delete the source; choose another --out",
        )


def _refuse_foreign(dest: Path) -> None:
    """Only phiquant's own artifacts (or empty folders) are ever replaced."""
    if dest.is_dir() and ((dest / MANIFEST_NAME).is_file() or not any(dest.iterdir())):
        return
    kind = "a folder" if dest.is_dir() else "a file"
    raise OutputError(
        f"{dest} exists and is {kind} that is not a phiquant artifact "
        f"(no {MANIFEST_NAME}), so --force does not replace it",
        "Move it away or choose another --out",
    )


def _sweep_stale(dest: Path) -> None:
    """Remove what killed runs left beside ``dest``; the caller holds its lock."""
    for leftover in dest.parent.glob(f".{dest.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if dest.exists():
        # A run killed between its two renames leaves the old artifact
        # retired; once a complete one is in place, that copy is stale.
        for leftover in dest.parent.glob(f".{dest.name}.old-*"):
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    dest: Path, *, force: bool = False, protected: Path | None = None
) -> Iterator[Path]:
    """Yield an empty staging folder that becomes ``dest`` if the block succeeds.

    An existing ``dest`` is refused unless ``force``; then it is replaced only
    after the new folder is complete. On any exception, Ctrl-C included, the
    staging folder is removed and ``dest`` is left as it was. A lock beside
    the destination refuses a second run writing the same folder at once.
    """
    dest = Path(dest).resolve()
    refuse_inside(dest, protected)
    lock_path = dest.parent / f".{dest.name}.lock"
    with output_errors(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_path.open("w")

    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise OutputError(
                f"another phiquant run is writing {dest}",
                "Wait for it to finish or choose another --out",
            ) from error
        try:
            if dest.exists() and not force:
                raise OutputError(
                    f"{dest} already exists",
                    "Pass --force to replace it, or choose another --out",
                )
            if dest.exists():
                _refuse_foreign(dest)
            _sweep_stale(dest)
            staging = Path(
                tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
            )
            try:
                yield staging
                _replace(staging, dest)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            lock_path.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(staging: Path, dest: Path) -> None:
    # mkdtemp makes the folder private; a finished artifact gets the usual mode.
    staging.chmod(0o777 & ~_current_umask())
    if not dest.exists():
        os.rename(staging, dest)
        return
    retired = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.rename(dest, retired)
    try:
        os.rename(staging, dest)
    except OSError:
        os.rename(retired, dest)
        raise
    shutil.rmtree(retired, ignore_errors=True)
