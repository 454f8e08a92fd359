"""Hugging Face hub ids, resolved to a local snapshot through huggingface_hub."""

from __future__ import annotations

import re
from pathlib import Path

from phiquant.errors import SourceError

HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what a conversion reads; pickle weights are skipped on purpose.
DOWNLOAD_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.jinja",
    "tokenizer.model",
    "*.txt",
]


def looks_like_hub_id(text: str) -> bool:
    return bool(HUB_ID_PATTERN.match(text))


def download_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """Return the local snapshot folder of ``repo_id``, downloading if needed.

    With no network (or ``HF_HUB_OFFLINE=1``) a snapshot already in the hub
    cache is used; otherwise the error says how to pass a local folder.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=DOWNLOAD_PATTERNS
            )
        )
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as error:
        raise SourceError(
            f"the hub has no accessible model {repo_id!r} ({type(error).__name__})",
            "Check the id and revision; for gated models log in with `hf auth login`",
        ) from error
    except (LocalEntryNotFoundError, OSError) as error:
        raise SourceError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub: offline and not "
            "in the local hub cache",
            "Download the model on a connected machine and pass its folder, "
            f"e.g. `phiquant quantize ./{repo_id.split('/')[-1]}`",
        ) from error
