"""MLX for Apple silicon: float and quantized folders written by mlx-lm.

The artifact is the folder ``mlx_lm.convert`` writes, with config.json and
generation_config.json corrected so that plain ``mlx_lm.load`` runs it right
(rope fields, real dtype, every stop token). Formats and options are
described in :mod:`phiquant.backends.mlx.options`.

mlx and mlx-lm also run on Linux CPUs (``mlx[cpu]``), slowly: that build
multiplies matrices with a reference BLAS and its quantized kernels are slow
and lose precision with half-precision scales. Speed figures from Linux do
not predict Apple silicon.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from phiquant.backends.base import (
    ArtifactInfo,
    Backend,
    BuildResult,
    ProgressFn,
    Runner,
    no_progress,
)
from phiquant.backends.mlx.options import (
    FLOAT_FORMATS,
    RECIPE_BITS,
    UNIFORM_BITS,
    MLXOptions,
    resolve_options,
    source_dtype,
)
from phiquant.sources import ModelSource
from phiquant.targets import Target


class MLXBackend(Backend):
    name = "mlx"
    runtime = "MLX (mlx-lm)"
    extra = "mlx"
    precision_aliases = {f: f for f in ("fp32", "fp16", "bf16", "int8", "int4")}
    formats = {
        **{name: name for name in FLOAT_FORMATS},
        **{name: name for name in UNIFORM_BITS},
        **{recipe: f"int{low}" for recipe, (low, _) in RECIPE_BITS.items()},
    }

    def missing_libraries(self) -> list[str]:
        return [m for m in ("mlx", "mlx_lm") if importlib.util.find_spec(m) is None]

    def validate(self, source: ModelSource, target: Target) -> None:
        self.build_options(source, target)

    def build_options(self, source: ModelSource, target: Target) -> MLXOptions:
        """The validated choices of ``target`` for ``source``."""
        default_dtype = source_dtype(dict(source.dtype_histogram()))
        return resolve_options(
            target.quant,
            dict(target.options),
            default_dtype,
            tied_embeddings=source.traits.tie_word_embeddings,
        )

    def owns(self, path: Path) -> bool:
        """A folder mlx-lm wrote: its weights say ``format: mlx``."""
        from phiquant.backends.mlx.describe import weight_files

        files = weight_files(path) if path.is_dir() else []
        return bool(files) and _safetensors_format(files[0]) == "mlx"

    def can_run(self, target: Target) -> bool:
        """False for half-precision quantized targets on a CPU-only, non-Apple host.

        MLX's Linux CPU build runs those at about one token per second on a
        135M model, so a test answer would take minutes (hours for Phi-3).
        """
        if sys.platform == "darwin" or target.quant in FLOAT_FORMATS:
            return True
        if str(target.options.get("dtype", "")).lower() in ("float32", "fp32"):
            return True
        try:
            import mlx.core as mx
        except ImportError:
            return False
        return mx.default_device() == mx.gpu

    def build(
        self,
        source: ModelSource,
        target: Target,
        out_dir: Path,
        progress: ProgressFn = no_progress,
    ) -> BuildResult:
        from phiquant.backends.mlx.build import (
            check_tokenizer,
            convert_with_mlx_lm,
            stop_token_ids,
            write_runtime_config,
        )

        self.ensure_available()
        chosen = self.build_options(source, target)
        convert_with_mlx_lm(source, chosen, out_dir, progress)
        stop_ids = stop_token_ids(source)
        write_runtime_config(source, out_dir, chosen.dtype, stop_ids)
        check_tokenizer(source, out_dir, stop_ids)

        info = self.describe(out_dir)
        options = {
            "format": target.quant,
            **chosen.as_dict(),
            "tensor_types": info.tensor_types,
            "eos_token_id": stop_ids,
        }
        return BuildResult(
            options=options,
            notes=_notes(target, chosen, info, source),
            stop_token_ids=stop_ids,
        )

    def describe(self, artifact_dir: Path) -> ArtifactInfo:
        from phiquant.backends.mlx.describe import describe_mlx

        return describe_mlx(artifact_dir)

    def load(self, artifact_dir: Path, *, context_tokens: int = 2048) -> Runner:
        """Open an artifact with ``mlx_lm.load``; its KV cache grows as needed."""
        from phiquant.backends.mlx.describe import read_config
        from phiquant.backends.mlx.runner import MLXRunner

        self.ensure_available()
        read_config(Path(artifact_dir))  # a clear error for a folder that is not MLX
        return MLXRunner(Path(artifact_dir))


def _safetensors_format(path: Path) -> str | None:
    """The ``format`` entry of a safetensors file's metadata, if any."""
    try:
        with path.open("rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(min(header_len, 100_000_000)))
    except (OSError, ValueError):
        return None
    return (header.get("__metadata__") or {}).get("format")


def _notes(
    target: Target, chosen: MLXOptions, info: ArtifactInfo, source: ModelSource
) -> list[str]:
    """Say plainly where the artifact differs from what its name suggests."""
    notes = []
    quantized = {k: v for k, v in info.tensor_types.items() if k.startswith("int")}
    total = sum(quantized.values())
    if chosen.recipe and total:
        shares = ", ".join(
            f"{name} {100 * count / total:.0f}%" for name, count in quantized.items()
        )
        notes.append(f"{target.name}: quantized weights by type: {shares}")
    if chosen.quantized:
        unquantized = info.parameter_count - total
        if unquantized / info.parameter_count > 0.01:
            notes.append(
                f"{target.name}: {100 * unquantized / info.parameter_count:.0f}% of "
                f"weights stay {chosen.dtype} (rows not a multiple of group size "
                f"{chosen.group_size}, or not a linear layer)"
            )

    if chosen.embedding_bits:
        notes.append(
            f"{target.name}: the tied embedding (also the output head) is kept at "
            f"{chosen.embedding_bits} bits"
        )
    traits = source.traits
    if traits.rope.kind == "longrope":
        notes.append(
            f"{target.name}: mlx-lm applies longrope's long factors at every "
            f"length, where the original uses its short factors below "
            f"{traits.original_max_position_embeddings} tokens"
        )
    window = traits.sliding_window
    if window and window < traits.max_position_embeddings:
        notes.append(
            f"{target.name}: mlx-lm ignores the sliding window ({window} tokens); "
            "attention reaches past it where the original does not"
        )
    return notes
