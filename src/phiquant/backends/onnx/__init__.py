"""ONNX for ONNX Runtime GenAI: fp32, fp16, int8 and int4 through its model builder.

Targets name an execution provider as their device: ``onnx:int4@cpu`` (the
default), ``@cuda``, ``@dml`` or ``@webgpu``. Quantization options are
described in :mod:`phiquant.backends.onnx.options`.
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
    no_progress,
)
from phiquant.backends.onnx.options import QuantOptions, resolve_options
from phiquant.backends.onnx.providers import (
    DEFAULT_DEVICE,
    PRECISIONS_BY_DEVICE,
    check_combination,
    provider_available,
)
from phiquant.errors import UsageError
from phiquant.sources import ModelSource
from phiquant.targets import Target, TargetSpec


class ONNXBackend(Backend):
    name = "onnx"
    runtime = "ONNX Runtime GenAI (onnxruntime-genai)"
    extra = "onnx"
    precision_aliases = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int4"}
    formats = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int4"}
    devices = tuple(PRECISIONS_BY_DEVICE)

    def missing_libraries(self) -> list[str]:
        needed = ("onnxruntime_genai", "onnx_ir", "onnx")
        return [m for m in needed if importlib.util.find_spec(m) is None]

    def resolve(self, spec: TargetSpec) -> Target:
        """Validate precision and device; the CPU provider when none is named."""
        target = super().resolve(spec)
        device = target.device or DEFAULT_DEVICE
        check_combination(target.quant, device)
        return Target(self.name, target.quant, target.precision, device)

    def validate(self, source: ModelSource, target: Target) -> None:
        check_rotary_fits_the_kernel(source.traits)
        self.quant_options(source, target)

    def owns(self, path: Path) -> bool:
        return path.is_dir() and (path / "genai_config.json").exists()

    def device_summary(self) -> str:
        default = f"@{DEFAULT_DEVICE} (default)"
        return "\n".join(
            f"{default if device == DEFAULT_DEVICE else '@' + device}: "
            f"{', '.join(precisions)}"
            for device, precisions in PRECISIONS_BY_DEVICE.items()
        )

    def can_run(self, target: Target) -> bool:
        """Whether this machine's ONNX Runtime can load ``target``'s artifact."""
        return provider_available(target.device or DEFAULT_DEVICE)

    def quant_options(self, source: ModelSource, target: Target) -> QuantOptions | None:
        """The validated quantization choices of ``target`` for ``source``."""
        device = target.device or DEFAULT_DEVICE
        check_combination(target.quant, device)
        return resolve_options(
            target.quant,
            device,
            dict(target.options),
            tied_embeddings=source.traits.tie_word_embeddings,
        )

    def build(
        self,
        source: ModelSource,
        target: Target,
        out_dir: Path,
        progress: ProgressFn = no_progress,
    ) -> BuildResult:
        from phiquant.backends.onnx.build import (
            apply_sliding_window,
            check_tokenizer,
            drop_null_tokenizer_fields,
            ensure_chat_template,
            run_model_builder,
            write_stop_tokens,
        )

        self.ensure_available()
        device = target.device or DEFAULT_DEVICE
        chosen = self.quant_options(source, target)
        builder_options = chosen.builder_options(target.quant) if chosen else {}

        progress(0, None, f"{target.name}: building with onnxruntime-genai")
        run_model_builder(source, target.quant, device, builder_options, out_dir)
        stop_ids = list(source.stop_token_ids)
        write_stop_tokens(out_dir, stop_ids)
        drop_null_tokenizer_fields(out_dir)
        ensure_chat_template(source, out_dir)

        notes = []
        window = source.traits.sliding_window
        if window and window < source.traits.max_position_embeddings:
            if apply_sliding_window(out_dir, int(window)):
                notes.append(
                    f"{target.name}: phiquant set the attention's {window}-token "
                    "sliding window in the graph (the builder leaves it to "
                    "genai_config.json, where ONNX Runtime GenAI then fails past "
                    "the window)"
                )
            else:
                notes.append(
                    f"{target.name}: no attention node takes a window; attention "
                    f"reaches past the original's {window}-token sliding window"
                )
        if provider_available(device):
            check_tokenizer(source, out_dir)
        else:
            notes.append(
                f"{target.name}: not loaded here (no {device} provider); the "
                "tokenizer check was skipped"
            )
        info = self.describe(out_dir)
        options = {
            "execution_provider": device,
            "precision": target.quant,
            **(chosen.as_dict() if chosen else {}),
            "embedding_shared": _embedding_shared(source, chosen),
            "builder_extra_options": builder_options,
            "tensor_types": info.tensor_types,
            "eos_token_id": info.metadata["eos_token_id"],
        }
        notes += _notes(target, chosen, source)
        return BuildResult(
            options=options,
            notes=notes,
            stop_token_ids=info.metadata["eos_token_id"],
        )

    def describe(self, artifact_dir: Path) -> ArtifactInfo:
        from phiquant.backends.onnx.describe import describe_onnx

        return describe_onnx(artifact_dir)

    def load(self, artifact_dir: Path, *, context_tokens: int = 2048) -> Runner:
        from phiquant.backends.onnx.runner import GenAIRunner

        self.ensure_available()
        return GenAIRunner(Path(artifact_dir), context_tokens)


def _embedding_shared(source: ModelSource, chosen: QuantOptions | None) -> bool:
    """Whether the embedding lookup reads the head's weights in the artifact."""
    if chosen is None:  # float builds share whenever the source ties them
        return source.traits.tie_word_embeddings
    return chosen.embedding == "shared"


def _notes(
    target: Target, chosen: QuantOptions | None, source: ModelSource
) -> list[str]:
    if chosen is None or target.quant != "int4":
        return []
    if source.traits.tie_word_embeddings and chosen.head == "int8":
        return [
            f"{target.name}: the tied output head is kept at int8 (head=int4 is "
            f"smaller and faster); the embedding is {chosen.embedding}"
        ]
    return []


# ONNX Runtime's GroupQueryAttention rotates in blocks: its cos/sin cache
# width (half the rotated dimensions) must be a multiple of this.
ROTARY_HALF_MULTIPLE = 8


def check_rotary_fits_the_kernel(traits) -> None:
    """Refuse, before building, a rotary size ONNX Runtime's attention rejects."""
    half = traits.rotary_dim // 2
    if half % ROTARY_HALF_MULTIPLE:
        raise UsageError(
            f"ONNX Runtime cannot run this model: it rotates {traits.rotary_dim} "
            f"of {traits.head_dim} dimensions per head, and its attention kernel "
            f"needs a multiple of {2 * ROTARY_HALF_MULTIPLE}",
            "Choose a gguf, openvino or mlx target for it",
        )
