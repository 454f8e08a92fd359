"""OpenVINO IR for OpenVINO GenAI: exported by optimum-intel, compressed by NNCF.

Every target is first exported as an IR with optimum-intel (fp16 weights, or
fp32 for FP32); int8 and int4 targets then compress that IR's weights with
NNCF. The folder opens unchanged with ``openvino_genai.LLMPipeline(folder,
"CPU")``: model, tokenizer and detokenizer IRs, chat template, and a
``generation_config.json`` whose ``eos_token_id`` lists the source's stop
tokens, the chat end-of-turn token included.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from phiquant.backends.base import (
    ArtifactInfo,
    Backend,
    BuildResult,
    ProgressFn,
    Runner,
    check_tokenizer_parity,
    no_progress,
)
from phiquant.backends.openvino.options import (
    FORMATS,
    PRECISION_ALIASES,
    compression_settings,
)
from phiquant.sources import ModelSource
from phiquant.targets import Target

# Import names of the libraries this backend drives.
REQUIRED_LIBRARIES = (
    "openvino",
    "openvino_genai",
    "openvino_tokenizers",
    "optimum.intel",
    "nncf",
)
# Element types in the IR -> the weight format they hold, for notes.
WEIGHT_TYPE_NAMES = {
    "i4": "int4 (symmetric)",
    "u4": "int4 (asymmetric)",
    "i8": "int8 (symmetric)",
    "u8": "int8 (asymmetric)",
    "f16": "fp16",
    "f32": "fp32",
}


class OpenVINOBackend(Backend):
    name = "openvino"
    runtime = "OpenVINO GenAI"
    extra = "openvino"
    precision_aliases = PRECISION_ALIASES
    formats = {name: spec.precision for name, spec in FORMATS.items()}

    def missing_libraries(self) -> list[str]:
        missing = []
        for module in REQUIRED_LIBRARIES:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:  # the parent package is absent
                found = False
            if not found:
                missing.append(module)
        return missing

    def validate(self, source: ModelSource, target: Target) -> None:
        compression_settings(target.quant, dict(target.options), source.traits)

    def owns(self, path: Path) -> bool:
        from phiquant.backends.openvino.export import MODEL_BIN, MODEL_XML

        return (path / MODEL_XML).is_file() and (path / MODEL_BIN).is_file()

    def build(
        self,
        source: ModelSource,
        target: Target,
        out_dir: Path,
        progress: ProgressFn = no_progress,
    ) -> BuildResult:
        from phiquant.backends.openvino.compress import compress_ir
        from phiquant.backends.openvino.export import export_ir

        self.ensure_available()
        spec = FORMATS[target.quant]
        # Options are checked before the export, which takes a while.
        settings = compression_settings(
            target.quant, dict(target.options), source.traits
        )

        progress(0, None, f"{target.name}: exporting with optimum-intel")
        export_ir(source, out_dir, spec.export_dtype)
        self._check_tokenizer(source, out_dir)
        if settings is not None:
            how = "data-aware" if settings.data_aware else "data-free"
            progress(0, None, f"{target.name}: compressing weights with NNCF ({how})")
            compress_ir(out_dir, settings, source)

        info = self.describe(out_dir)
        options = {
            "export_dtype": spec.export_dtype,
            **(settings.as_options() if settings else {}),
            "tensor_types": info.tensor_types,
        }
        notes = list(settings.notes) if settings else []
        if settings is not None and settings.is_int4:
            notes.append(_weight_mix_note(target.quant, info.tensor_types))
        return BuildResult(
            options=options,
            notes=notes,
            stop_token_ids=list(source.stop_token_ids),
        )

    def _check_tokenizer(self, source: ModelSource, folder: Path) -> None:
        """Refuse an artifact whose tokenizer IR splits text unlike the original."""
        import openvino_genai

        tokenizer = openvino_genai.Tokenizer(str(folder))

        def encode(text: str) -> list[int]:
            encoded = tokenizer.encode(text, add_special_tokens=False)
            return [int(i) for i in encoded.input_ids.data[0]]

        check_tokenizer_parity(source, "the OpenVINO tokenizer", encode)

    def describe(self, artifact_dir: Path) -> ArtifactInfo:
        from phiquant.backends.openvino.reader import describe_ir

        return describe_ir(artifact_dir)

    def load(self, artifact_dir: Path, *, context_tokens: int = 2048) -> Runner:
        from phiquant.backends.openvino.reader import require_ir
        from phiquant.backends.openvino.runner import OpenVINORunner

        self.ensure_available()
        require_ir(artifact_dir)
        return OpenVINORunner(artifact_dir, context_tokens)


def _weight_mix_note(quant: str, tensor_types: dict[str, int]) -> str:
    """Say how many weights NNCF really put in each type (ratio, embeddings)."""
    total = sum(tensor_types.values()) or 1
    shares = ", ".join(
        f"{WEIGHT_TYPE_NAMES.get(name, name)} {_percent(count / total)}"
        for name, count in tensor_types.items()
    )
    return f"{quant}: weights by type: {shares}"


def _percent(share: float) -> str:
    # Norm weights stay fp16 but are a sliver of the total; "0%" would hide them.
    return "<1%" if 0 < share < 0.005 else f"{100 * share:.0f}%"
