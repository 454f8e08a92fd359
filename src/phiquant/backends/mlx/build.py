"""Convert a source to MLX with mlx-lm's own converter, then make its config true."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

from phiquant.backends.base import ProgressFn, check_tokenizer_parity
from phiquant.backends.mlx.config import runtime_config, runtime_generation_config
from phiquant.backends.mlx.options import MLXOptions
from phiquant.errors import ArtifactError, BackendUnavailableError, SourceError
from phiquant.native_output import captured_native_stderr
from phiquant.sources import ModelSource

log = logging.getLogger(__name__)

# mlx-lm refuses to convert into an existing folder, so it writes here first.
CONVERT_SUBFOLDER = "mlx-lm-output"
# mlx_lm.load trusts a folder's tokenizer code unless told otherwise.
NO_REMOTE_CODE = {"trust_remote_code": False}


def convert_with_mlx_lm(
    source: ModelSource, chosen: MLXOptions, out_dir: Path, progress: ProgressFn
) -> None:
    """Write mlx-lm's conversion of ``source`` into the empty folder ``out_dir``."""
    from mlx_lm import convert

    if chosen.recipe is not None:
        _check_recipe_exists(chosen.recipe)
    converted = out_dir / CONVERT_SUBFOLDER
    what = f"mlx:{chosen.format}"
    progress(0, None, f"{what}: converting with mlx-lm")
    printed = io.StringIO()
    with source.normalised_folder() as folder:
        try:
            # mlx-lm reports progress with print(); keep it for --debug only.
            with (
                contextlib.redirect_stdout(printed),
                captured_native_stderr("mlx-lm conversion"),
            ):
                convert(
                    str(folder),
                    str(converted),
                    quantize=chosen.quantized,
                    q_group_size=chosen.group_size,
                    q_bits=chosen.bits,
                    dtype=chosen.dtype,
                    quant_predicate=_quant_predicate(chosen),
                )
        except ValueError as error:
            raise SourceError(
                f"mlx-lm cannot convert {source.name} to {what} ({error})",
                "Check that mlx-lm supports this architecture, or choose another "
                "target",
            ) from error
        finally:
            log.debug("mlx-lm printed:\n%s", printed.getvalue().strip())

    for path in converted.iterdir():
        path.rename(out_dir / path.name)
    converted.rmdir()


def _quant_predicate(chosen: MLXOptions):
    """mlx-lm's recipe name, or a rule giving the embedding its own bits."""
    if chosen.embedding_bits is None:
        return chosen.recipe
    embedding = {"bits": chosen.embedding_bits, "group_size": chosen.group_size}

    def predicate(path: str, module, *_) -> bool | dict:
        return embedding if path.endswith("embed_tokens") else True

    return predicate


def _check_recipe_exists(recipe: str) -> None:
    from mlx_lm.convert import QUANT_RECIPES

    if recipe not in QUANT_RECIPES:
        raise BackendUnavailableError(
            f"the installed mlx-lm has no {recipe} recipe "
            f"(it has {', '.join(QUANT_RECIPES)})",
            "Run: pip install 'phiquant[mlx]' for the tested mlx-lm version",
        )


def stop_token_ids(source: ModelSource) -> list[int]:
    """Every id a reply must stop at: the source's EOS ids and the turn end."""
    ids = list(source.stop_token_ids)
    eos_text = source.tokenizer_config.get("eos_token")
    if isinstance(eos_text, dict):  # older tokenizer configs store AddedToken dicts
        eos_text = eos_text.get("content")
    if isinstance(eos_text, str) and (token := source.token_id(eos_text)) is not None:
        ids.append(token)
    return list(dict.fromkeys(ids))


def write_runtime_config(
    source: ModelSource, out_dir: Path, float_dtype: str, stop_ids: list[int]
) -> None:
    """Rewrite config.json and generation_config.json with what mlx-lm reads."""
    config_path = out_dir / "config.json"
    written = json.loads(config_path.read_text())
    config = runtime_config(
        written, source.config, float_dtype=float_dtype, stop_token_ids=stop_ids
    )
    config_path.write_text(json.dumps(config, indent=4) + "\n")

    generation_path = out_dir / "generation_config.json"
    generation = (
        json.loads(generation_path.read_text()) if generation_path.exists() else None
    )
    generation_path.write_text(
        json.dumps(
            runtime_generation_config(generation, stop_token_ids=stop_ids), indent=2
        )
        + "\n"
    )


def check_tokenizer(source: ModelSource, out_dir: Path, stop_ids: list[int]) -> None:
    """Refuse an artifact whose tokenizer, as mlx-lm loads it, differs from the source.

    Checks the split of a probe text, the chat template, and that the loaded
    EOS set holds every stop token, the chat end-of-turn token included.
    """
    from mlx_lm.utils import load_config, load_tokenizer

    eos_ids = load_config(out_dir).get("eos_token_id")
    tokenizer = load_tokenizer(out_dir, NO_REMOTE_CODE, eos_token_ids=eos_ids)
    check_tokenizer_parity(
        source, "mlx-lm", lambda text: tokenizer.encode(text, add_special_tokens=False)
    )
    if tokenizer.chat_template != source.chat_template:
        raise ArtifactError(
            "the artifact's chat template differs from the source's",
            "Please report this model; its tokenizer files were not carried over",
        )
    missing = sorted(set(stop_ids) - set(tokenizer.eos_token_ids))
    if missing:
        raise ArtifactError(
            f"mlx-lm would not stop at token(s) {missing} in the built artifact",
            "Please report this model; its stop tokens are not carried over",
        )
