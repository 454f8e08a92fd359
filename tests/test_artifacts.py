import fcntl
import json

import pytest

from phiquant.artifacts import (
    MANIFEST_NAME,
    atomic_folder,
    check_files,
    read_manifest,
    write_manifest,
)
from phiquant.errors import ArtifactError, OutputError


def test_folder_appears_only_when_the_block_succeeds(tmp_path):
    dest = tmp_path / "artifact"
    with atomic_folder(dest) as staging:
        (staging / "weights.bin").write_bytes(b"1234")
        assert not dest.exists()
    assert (dest / "weights.bin").read_bytes() == b"1234"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


@pytest.mark.parametrize("interruption", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_leaves_nothing_behind(tmp_path, interruption):
    dest = tmp_path / "artifact"
    with pytest.raises(type(interruption)):
        with atomic_folder(dest) as staging:
            (staging / "half-written.gguf").write_bytes(b"12")
            raise interruption
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_refused_and_kept(tmp_path):
    dest = tmp_path / "artifact"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists. Pass --force"):
        with atomic_folder(dest):
            pass
    assert (dest / "keep.txt").read_text() == "mine"


def test_force_replaces_only_after_success(tmp_path):
    dest = tmp_path / "artifact"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    write_manifest(dest, {})
    with pytest.raises(RuntimeError):
        with atomic_folder(dest, force=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("failed build")
    assert (dest / "old.txt").exists()

    with atomic_folder(dest, force=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_force_never_replaces_what_is_not_an_artifact(tmp_path, kind):
    dest = tmp_path / "artifact"
    if kind == "folder":
        dest.mkdir()
        (dest / "notes.txt").write_text("precious")
    else:
        dest.write_text("precious")
    with pytest.raises(OutputError, match=f"is a {kind} that is not a phiquant"):
        with atomic_folder(dest, force=True) as staging:
            (staging / "new.txt").write_text("new")
    kept = dest / "notes.txt" if kind == "folder" else dest
    assert kept.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_output_holding_the_source_is_refused(tmp_path):
    source = tmp_path / "artifact" / "model"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    with pytest.raises(OutputError, match="Replacing it would delete the source"):
        with atomic_folder(tmp_path / "artifact", force=True, protected=source):
            pass
    assert (source / "config.json").read_text() == "{}"


def test_a_killed_run_s_staging_folder_is_swept_by_the_next(tmp_path):
    # What `kill -9` leaves: a half-written staging folder and the lock file.
    stale = tmp_path / ".artifact.tmp-12345"
    stale.mkdir()
    (stale / "half-written.gguf").write_bytes(b"12")
    (tmp_path / ".artifact.lock").touch()
    with atomic_folder(tmp_path / "artifact") as staging:
        (staging / "weights.bin").write_bytes(b"1234")
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_an_unwritable_output_is_one_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match="cannot write to .*a-file"):
        with atomic_folder(tmp_path / "a-file" / "artifact"):
            pass


def test_output_inside_the_source_is_refused(tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    with pytest.raises(OutputError, match="inside the source folder"):
        with atomic_folder(source / "out", protected=source):
            pass
    assert list(source.iterdir()) == []


def test_a_second_run_into_the_same_folder_at_once_is_refused(tmp_path):
    dest = tmp_path / "artifact"
    with open(tmp_path / ".artifact.lock", "w") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another phiquant run is writing"):
            with atomic_folder(dest):
                pass
    assert not dest.exists()


def test_manifest_lists_every_file_and_detects_changes(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tokenizer.json").write_text("{}")
    target = {"name": "gguf:F16", "backend": "gguf", "format": "F16"}
    write_manifest(tmp_path, {"target": target | {"precision": "fp16"}})

    manifest = read_manifest(tmp_path)
    assert set(manifest["files"]) == {"model.gguf", "sub/tokenizer.json"}
    assert manifest["files"]["model.gguf"]["size_bytes"] == 7
    assert check_files(tmp_path, manifest) == []

    (tmp_path / "model.gguf").write_bytes(b"weightz")
    (tmp_path / "extra.txt").write_text("?")
    assert check_files(tmp_path, manifest) == [
        "content differs: model.gguf",
        "not in manifest: extra.txt",
    ]
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["manifest_version"] == 1


def test_an_incomplete_manifest_is_one_clear_error(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ArtifactError, match="is incomplete .no target, files"):
        read_manifest(tmp_path)
