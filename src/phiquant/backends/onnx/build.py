"""Build an ONNX Runtime GenAI folder with onnxruntime-genai's own model builder.

The builder is called through its Python API on the source's normalised
folder, so it reads a config it understands (explicit
``original_max_position_embeddings``: otherwise it picks LongRoPE for models
without longrope factors and fails). Afterwards phiquant completes what the
builder leaves out: every stop token of the chat template in
``genai_config.json``, and a check that ONNX Runtime GenAI's tokenizer splits
text exactly as the source's does.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from phiquant.artifacts import read_artifact_json
from phiquant.backends.base import check_tokenizer_parity
from phiquant.errors import ArtifactError
from phiquant.native_output import captured_native_stderr
from phiquant.sources import ModelSource

log = logging.getLogger(__name__)

GENAI_CONFIG = "genai_config.json"
MODEL_FILE = "model.onnx"
# A text that exercises digits, spacing, punctuation and non-ASCII letters,
# tokenized by both the source tokenizer and ONNX Runtime GenAI after a build.
# Builder options phiquant always sets: a local folder needs no hub token.
FIXED_BUILDER_OPTIONS = {"hf_token": "false", "filename": MODEL_FILE}


def _import_builder():
    """The builder's entry points, without the root logger it configures on import."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import onnxruntime_genai.models  # noqa: F401 - puts the builder's folder on sys.path
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    root.handlers[:] = handlers
    root.setLevel(level)
    return create_model, parse_extra_options


def run_model_builder(
    source: ModelSource,
    precision: str,
    device: str,
    builder_options: dict[str, str],
    out_dir: Path,
) -> None:
    """Write model.onnx, its weights, genai_config.json and tokenizer files."""
    create_model, parse_extra_options = _import_builder()

    options = {**builder_options, **FIXED_BUILDER_OPTIONS}
    pairs = [f"{key}={value}" for key, value in options.items()]
    # The builder wants a cache folder; keeping it inside the staging folder
    # means the build writes nowhere else.
    cache_dir = out_dir / ".builder-cache"
    try:
        with source.normalised_folder() as folder, _builder_output_logged():
            prepared = parse_extra_options(
                None,
                str(folder),
                str(out_dir),
                precision,
                device,
                str(cache_dir),
                pairs,
            )
            create_model(
                None,
                str(folder),
                str(out_dir),
                precision,
                device,
                str(cache_dir),
                **prepared,
            )
    except Exception as error:  # the builder raises bare Exception among others
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ArtifactError(
            f"onnxruntime-genai's model builder failed: "
            f"{type(error).__name__}: {first_line}",
            "Run with --debug to see the builder's log",
        ) from error
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


@contextlib.contextmanager
def _builder_output_logged() -> Iterator[None]:
    """The builder prints progress to stdout and stderr; send it to the log."""
    printed = io.StringIO()
    try:
        with (
            captured_native_stderr("onnxruntime-genai model builder"),
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
        ):
            yield
    finally:
        if printed.getvalue().strip():
            log.debug(
                "onnxruntime-genai model builder printed:\n%s", printed.getvalue()
            )


def read_genai_config(folder: Path) -> dict:
    return read_artifact_json(
        folder,
        GENAI_CONFIG,
        f"has no {GENAI_CONFIG}",
        "Pass a folder made by `phiquant quantize --to onnx:...`",
    )


def config_stop_token_ids(config: dict) -> list[int]:
    """eos_token_id of a genai_config.json, always as a list."""
    value = config.get("model", {}).get("eos_token_id")
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def write_stop_tokens(out_dir: Path, stop_token_ids: list[int]) -> None:
    """List every turn-ending token as EOS, so generation stops at a turn's end.

    The builder copies only the config's single eos_token_id; chat templates
    end a turn with another token (Phi-3: <|end|> 32007 beside <|endoftext|>).
    """
    path = out_dir / GENAI_CONFIG
    config = read_genai_config(out_dir)
    ids = list(dict.fromkeys([*config_stop_token_ids(config), *stop_token_ids]))
    config["model"]["eos_token_id"] = ids
    path.write_text(json.dumps(config, indent=4) + "\n")


def apply_sliding_window(out_dir: Path, window: int) -> bool:
    """Make attention see only ``window`` tokens, in the graph rather than GenAI.

    The builder leaves GroupQueryAttention's ``local_window_size`` at -1 (full
    attention) and instead writes a ``sliding_window`` section into
    genai_config.json, with which ONNX Runtime GenAI sizes its KV cache to the
    window and then fails once a sequence passes it (a Phi-3-mini-4k chat
    broke after window + 16 tokens). Setting the kernel's window and dropping
    that section reproduces the original exactly, at any length. Returns
    whether any attention node was changed.
    """
    import onnx

    model_path = out_dir / MODEL_FILE
    # Only the graph is rewritten; the weights stay in model.onnx.data.
    model = onnx.load(str(model_path), load_external_data=False)
    changed = False
    for node in model.graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        for attribute in node.attribute:
            if attribute.name == "local_window_size":
                attribute.i = window
                changed = True
    if changed:
        onnx.save(model, str(model_path))
        config = read_genai_config(out_dir)
        config["model"]["decoder"].pop("sliding_window", None)
        (out_dir / GENAI_CONFIG).write_text(json.dumps(config, indent=4) + "\n")
    return changed


def drop_null_tokenizer_fields(out_dir: Path) -> None:
    """Remove null entries of tokenizer_config.json, which GenAI cannot read.

    transformers 5 saves ``"chat_template": null`` and ``"pad_token": null``
    for models without them (phi-2); ONNX Runtime GenAI's tokenizer then fails
    to load with a JSON type error. A null field means the same as none.
    """
    path = out_dir / "tokenizer_config.json"
    if not path.exists():
        return
    config = json.loads(path.read_text())
    kept = {key: value for key, value in config.items() if value is not None}
    if kept != config:
        path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n")


def ensure_chat_template(source: ModelSource, out_dir: Path) -> None:
    """Keep the source's chat template beside the tokenizer, where GenAI reads it."""
    template = source.chat_template
    if template is None or (out_dir / "chat_template.jinja").exists():
        return
    tokenizer_config = out_dir / "tokenizer_config.json"
    if tokenizer_config.exists():
        if "chat_template" in json.loads(tokenizer_config.read_text()):
            return
    (out_dir / "chat_template.jinja").write_text(template)


def check_tokenizer(source: ModelSource, out_dir: Path) -> None:
    """Refuse an artifact whose tokenizer splits text unlike the original."""
    import onnxruntime_genai as og

    with captured_native_stderr("ONNX Runtime GenAI tokenizer load"):
        tokenizer = og.Tokenizer(og.Model(str(out_dir)))
    tokenizer.update_options(add_special_tokens="false")
    check_tokenizer_parity(source, "ONNX Runtime GenAI", tokenizer.encode)
