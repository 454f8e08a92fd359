"""Export a source to an OpenVINO IR folder with optimum-intel.

optimum-intel traces the transformers model into a stateful IR (the KV cache
lives inside the model, as OpenVINO GenAI expects) and converts the tokenizer
with openvino-tokenizers. phiquant then writes the chat stop tokens into
``generation_config.json``, which GenAI reads to decide when a reply ends.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from phiquant.errors import ArtifactError, BackendUnavailableError
from phiquant.native_output import captured_native_stderr
from phiquant.sources import ModelSource

MODEL_XML = "openvino_model.xml"
MODEL_BIN = "openvino_model.bin"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
GENERATION_CONFIG = "generation_config.json"
# The task that gives a decoder with its KV cache, the layout GenAI runs.
EXPORT_TASK = "text-generation-with-past"


def export_ir(source: ModelSource, out_dir: Path, dtype: str) -> None:
    """Write ``source`` as an OpenVINO IR with ``dtype`` (fp16/fp32) weights."""
    main_export, ov_config_class = _optimum_exporter()
    with (
        source.normalised_folder() as hf_folder,
        warnings.catch_warnings(),
        captured_native_stderr("optimum-intel export"),
    ):
        # Tracing warnings (TracerWarning, deprecations) are expected and
        # harmless for decoder export; the fidelity tests are the check.
        warnings.simplefilter("ignore")
        try:
            main_export(
                str(hf_folder),
                str(out_dir),
                task=EXPORT_TASK,
                ov_config=ov_config_class(dtype=dtype),
                stateful=True,
                convert_tokenizer=True,
                local_files_only=True,
                library_name="transformers",
            )
        except Exception as error:  # optimum raises many types; keep the cause
            if "KeyboardInterrupt" in str(error):
                # Ctrl-C inside OpenVINO's converter comes back wrapped in its
                # RuntimeError; it is an interruption, not a failed export.
                raise KeyboardInterrupt from error
            summary = " ".join(str(error).split())[:300]
            raise ArtifactError(
                f"optimum-intel could not export {source.name} "
                f"({type(error).__name__}: {summary})",
                "Run with --debug for the exporter's log",
            ) from error

    missing = [
        name
        for name in (MODEL_XML, MODEL_BIN, TOKENIZER_XML, DETOKENIZER_XML)
        if not (out_dir / name).exists()
    ]
    if missing:
        raise ArtifactError(
            f"optimum-intel did not write {', '.join(missing)}",
            "The tokenizer may not be convertible by openvino-tokenizers; run with "
            "--debug to see the converter's log",
        )
    write_stop_tokens(out_dir, list(source.stop_token_ids))


def write_stop_tokens(out_dir: Path, stop_token_ids: list[int]) -> None:
    """Make GenAI end a reply at every stop token, the end-of-turn one included.

    GenAI turns a list ``eos_token_id`` into its stop set. An exported
    Phi-3.5 that carried only the tokenizer's EOS never stopped at ``<|end|>``
    (optimum-intel issue 1630), so the source's whole stop set is written.
    """
    if not stop_token_ids:
        raise ArtifactError(
            "the source defines no end-of-turn or EOS token",
            "Add eos_token_id to the source's generation_config.json",
        )
    path = out_dir / GENERATION_CONFIG
    config = json.loads(path.read_text()) if path.exists() else {}
    config["eos_token_id"] = (
        stop_token_ids[0] if len(stop_token_ids) == 1 else stop_token_ids
    )
    path.write_text(json.dumps(config, indent=2) + "\n")


def _optimum_exporter():
    try:
        from optimum.exporters.openvino import main_export
        from optimum.intel import OVConfig
    except ImportError as error:
        raise BackendUnavailableError(
            f"optimum-intel failed to import ({error})",
            "Run: pip install 'phiquant[openvino]'; if torchvision is installed, "
            "remove it (pip uninstall torchvision), it breaks optimum.intel",
        ) from error
    return main_export, OVConfig
