"""A checked, read-only view of a Hugging Face checkpoint folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phiquant.errors import SourceError
from phiquant.families import Family, family_for_config
from phiquant.sources.checks import (
    check_config_values,
    check_tokenizer_files,
    check_weights_match_config,
)
from phiquant.sources.config import ModelTraits, normalise_config, traits_from_config
from phiquant.sources.pickled import convert_to_safetensors, pickle_files

if TYPE_CHECKING:
    import torch

SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
# Files copied beside converted weights so other tools find the tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "added_tokens.json",
)
# Code that a model folder may carry (auto_map modules). phiquant never runs it
# and never hands it to a converter.
CODE_SUFFIXES = (".py", ".pyc")


@dataclass
class ModelSource:
    """A model to convert: its folder, normalised config and family.

    phiquant only ever reads from ``path``; outputs inside it are refused.
    """

    name: str
    path: Path
    kind: str  # "demo", "local" or "hub"
    raw_config: dict[str, Any]
    config: dict[str, Any]
    family: Family
    weight_files: tuple[Path, ...]
    hub_id: str | None = None
    revision: str | None = None
    # The user's folder when ``path`` is phiquant's safetensors copy of it.
    origin: Path | None = None
    _tensor_files: dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def traits(self) -> ModelTraits:
        return traits_from_config(self.config)

    @cached_property
    def tokenizer_config(self) -> dict[str, Any]:
        path = self.path / "tokenizer_config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def tokenizer_json(self) -> dict[str, Any]:
        return json.loads((self.path / "tokenizer.json").read_text())

    @property
    def chat_template(self) -> str | None:
        """The chat template, from ``chat_template.jinja`` or the tokenizer config."""
        standalone = self.path / "chat_template.jinja"
        if standalone.exists():
            return standalone.read_text()
        template = self.tokenizer_config.get("chat_template")
        return template if isinstance(template, str) else None

    @cached_property
    def generation_config(self) -> dict[str, Any]:
        path = self.path / "generation_config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def token_id(self, text: str) -> int | None:
        """The id of a special or added token, or None if the vocabulary lacks it."""
        for token in self.tokenizer_json.get("added_tokens", []):
            if token["content"] == text:
                return int(token["id"])
        vocab = self.tokenizer_json.get("model", {}).get("vocab", {})
        return vocab.get(text) if isinstance(vocab, dict) else None

    @cached_property
    def end_of_turn_token(self) -> tuple[str, int] | None:
        """The token that ends an assistant turn in the chat template, if any."""
        template = self.chat_template or ""
        for text in self.family.end_of_turn_tokens:
            token = self.token_id(text)
            if token is not None and text in template:
                return text, token
        return None

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Every token after which generation must stop: turn end and EOS."""
        ids = list(self.traits.eos_token_ids)
        ids += _as_list(self.generation_config.get("eos_token_id"))
        if self.end_of_turn_token:
            ids.append(self.end_of_turn_token[1])
        return tuple(dict.fromkeys(ids))

    def _tensor_index(self) -> dict[str, Path]:
        if not self._tensor_files:
            from safetensors import safe_open

            for weight_file in self.weight_files:
                try:
                    with safe_open(weight_file, framework="pt") as handle:
                        for name in handle.keys():
                            self._tensor_files[name] = weight_file
                except Exception as error:  # safetensors raises several types
                    raise SourceError(
                        f"{weight_file} is not a readable safetensors file ({error})",
                        "Re-download the checkpoint; the file is truncated or corrupt",
                    ) from error
        return self._tensor_files

    def tensor_names(self) -> list[str]:
        return list(self._tensor_index())

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield every weight tensor in file order, one file open at a time."""
        from safetensors import safe_open

        for weight_file in self.weight_files:
            try:
                with safe_open(weight_file, framework="pt") as handle:
                    for name in handle.keys():
                        yield name, handle.get_tensor(name)
            except SourceError:
                raise
            except Exception as error:
                raise SourceError(
                    f"cannot read weights from {weight_file} ({error})",
                    "Re-download the checkpoint; the file is truncated or corrupt",
                ) from error

    def dtype_histogram(self) -> Counter[str]:
        """Parameter counts per stored dtype, read from the safetensors headers."""
        counts: Counter[str] = Counter()
        for weight_file in self.weight_files:
            for entry in read_safetensors_header(weight_file).values():
                size = 1
                for dim in entry["shape"]:
                    size *= dim
                counts[entry["dtype"]] += size
        return counts

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.weight_files)

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of config and weights: which source an artifact came from."""
        digest = hashlib.sha256()
        for path in (self.path / "config.json", *self.weight_files):
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
        return digest.hexdigest()

    @contextlib.contextmanager
    def normalised_folder(self) -> Iterator[Path]:
        """A temporary folder that reads as this model with a normalised config.

        Converters that take a Hugging Face folder (ONNX builder, optimum,
        mlx-lm) get ``config.json`` in the spelling they read correctly, and
        links to the source's own weights and tokenizer files, which stay
        untouched. The folder's Python modules are left out: converters use
        their libraries' own classes, and mlx-lm would otherwise copy the
        modules into the artifact.
        """
        with tempfile.TemporaryDirectory(prefix="phiquant-source-") as tmp:
            folder = Path(tmp)
            (folder / "config.json").write_text(json.dumps(self.config, indent=2))
            for path in self.path.iterdir():
                if (
                    path.is_file()
                    and path.name != "config.json"
                    and path.suffix not in CODE_SUFFIXES
                ):
                    (folder / path.name).symlink_to(path.resolve())
            yield folder

    def describe(self) -> dict[str, Any]:
        """Provenance for an artifact manifest."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.origin or self.path),
            "hub_id": self.hub_id,
            "revision": self.revision,
            "architecture": self.traits.architecture,
            "family": self.family.name,
            "content_sha256": self.content_hash,
        }


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor entries of a safetensors file, checked against the file's length."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SourceError(f"{path} is truncated (no safetensors header)", "")
        header_len = int.from_bytes(prefix, "little")
        if header_len <= 0 or 8 + header_len > size:
            raise SourceError(
                f"{path} has a corrupt safetensors header",
                "Re-download the checkpoint",
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SourceError(
                f"{path} has a corrupt safetensors header ({error})",
                "Re-download the checkpoint",
            ) from error
    header.pop("__metadata__", None)
    data_len = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if 8 + header_len + data_len > size:
        raise SourceError(
            f"{path} is truncated: {size} bytes, header promises "
            f"{8 + header_len + data_len}",
            "Re-download the checkpoint",
        )
    return header


def _weight_files(folder: Path) -> tuple[Path, ...]:
    index_path = folder / SHARD_INDEX
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            shard_names = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as error:
            raise SourceError(
                f"{index_path} is malformed ({error})", "Re-download the checkpoint"
            ) from error
        missing = [name for name in shard_names if not (folder / name).exists()]
        if missing:
            raise SourceError(
                f"sharded checkpoint in {folder} lacks {len(missing)} shard(s): "
                f"{', '.join(missing)}",
                "Finish the download, then run again",
            )
        return tuple(folder / name for name in shard_names)

    if (folder / SINGLE_WEIGHTS).exists():
        return (folder / SINGLE_WEIGHTS,)

    if pickle_files(folder):
        raise SourceError(
            f"{folder} holds only pickle weights (pytorch_model.bin)",
            "Pickle files can run code when loaded; convert them to "
            "safetensors or pass --allow-pickle if you trust their origin",
        )
    raise SourceError(
        f"no model weights in {folder}",
        f"Expected {SINGLE_WEIGHTS} or {SHARD_INDEX} with its shards",
    )


def load_model_folder(
    folder: Path,
    *,
    name: str,
    kind: str,
    hub_id: str | None = None,
    revision: str | None = None,
    allow_pickle: bool = False,
) -> ModelSource:
    """Check a checkpoint folder and describe it; nothing in it is modified."""
    config_path = folder / "config.json"
    if not config_path.exists():
        raise SourceError(
            f"{folder} has no config.json",
            "Point phiquant at a Hugging Face model folder (config.json, "
            "*.safetensors, tokenizer.json)",
        )
    try:
        raw_config = json.loads(config_path.read_text())
        if not isinstance(raw_config, dict):
            raise ValueError("top level is not an object")
    except (UnicodeDecodeError, ValueError) as error:
        raise SourceError(
            f"{config_path} is malformed ({error})",
            "Restore the original config.json from the model's repository",
        ) from error

    family = family_for_config(raw_config)
    has_safetensors = (folder / SINGLE_WEIGHTS).exists() or (
        folder / SHARD_INDEX
    ).exists()
    if allow_pickle and not has_safetensors and pickle_files(folder):
        converted = load_model_folder(
            convert_to_safetensors(folder),
            name=name,
            kind=kind,
            hub_id=hub_id,
            revision=revision,
        )
        converted.origin = folder
        return converted
    weights = _weight_files(folder)
    shapes = _tensor_shapes(weights)

    if not (folder / "tokenizer.json").exists():
        raise SourceError(
            f"{folder} has no tokenizer.json",
            "Copy the tokenizer files (tokenizer.json, tokenizer_config.json) "
            "from the model's repository into the folder",
        )

    try:
        config = normalise_config(raw_config)
        traits = traits_from_config(config)
    except KeyError as error:
        raise SourceError(
            f"{config_path} lacks a required field ({error})",
            "Restore the original config.json from the model's repository",
        ) from error
    except (TypeError, ValueError) as error:
        raise SourceError(
            f"{config_path} has an invalid field ({error})",
            "Restore the original config.json from the model's repository",
        ) from error
    check_config_values(traits)
    check_weights_match_config(traits, family, shapes)

    source = ModelSource(
        name=name,
        path=folder,
        kind=kind,
        raw_config=raw_config,
        config=config,
        family=family,
        weight_files=weights,
        hub_id=hub_id,
        revision=revision,
    )
    check_tokenizer_files(source)
    return source


def _tensor_shapes(weight_files: tuple[Path, ...]) -> dict[str, list[int]]:
    return {
        name: entry["shape"]
        for weight_file in weight_files
        for name, entry in read_safetensors_header(weight_file).items()
    }
