"""Hub ids resolve through huggingface_hub; tests use a local hub cache."""

import shutil

import pytest
from huggingface_hub import constants

from phiquant.errors import SourceError
from phiquant.sources import open_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hub_id_resolves_from_the_local_hub_cache(hub_cache, demo_source):
    repo = hub_cache / "models--phiquant-tests--smollm2-phi3"
    shutil.copytree(demo_source.path, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)

    source = open_source("phiquant-tests/smollm2-phi3")

    assert source.kind == "hub"
    assert source.hub_id == "phiquant-tests/smollm2-phi3"
    assert source.revision == COMMIT
    assert source.content_hash == demo_source.content_hash


def test_hub_id_offline_says_how_to_pass_a_local_folder(hub_cache):
    with pytest.raises(SourceError) as raised:
        open_source("microsoft/Phi-3-mini-4k-instruct")
    message = raised.value.message
    assert "offline" in message
    assert "phiquant quantize ./Phi-3-mini-4k-instruct" in message
    assert "\n" not in message


def test_path_that_is_neither_folder_nor_hub_id_is_explained():
    with pytest.raises(SourceError, match="no model folder at ./nowhere/at/all"):
        open_source("./nowhere/at/all")
