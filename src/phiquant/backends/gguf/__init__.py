"""GGUF for llama.cpp: F32/F16/BF16/Q8_0 written directly, k-quants via llama.cpp."""

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
from phiquant.errors import ArtifactError
from phiquant.native_output import captured_native_stderr
from phiquant.sources import ModelSource
from phiquant.targets import Target


class GGUFBackend(Backend):
    name = "gguf"
    runtime = "llama.cpp (llama-cpp-python)"
    extra = "gguf"
    precision_aliases = {
        "fp32": "F32",
        "fp16": "F16",
        "bf16": "BF16",
        "int8": "Q8_0",
        "int4": "Q4_K_M",
    }
    formats = {
        "F32": "fp32",
        "F16": "fp16",
        "BF16": "bf16",
        "Q8_0": "int8",
        "Q6_K": "int6",
        "Q5_K_M": "int5",
        "Q4_K_M": "int4",
        "Q4_0": "int4",
    }

    def missing_libraries(self) -> list[str]:
        return [m for m in ("llama_cpp",) if importlib.util.find_spec(m) is None]

    def build(
        self,
        source: ModelSource,
        target: Target,
        out_dir: Path,
        progress: ProgressFn = no_progress,
    ) -> BuildResult:
        from phiquant.backends.gguf.quantize import quantize_with_llama_cpp
        from phiquant.backends.gguf.writer import DIRECT_TYPES, write_gguf

        self.ensure_available()
        path = out_dir / f"{source.name}-{target.quant}.gguf"
        if target.quant in DIRECT_TYPES:
            written = write_gguf(source, path, target.quant, progress)
        else:
            # llama.cpp quantizes from a float GGUF; BF16 holds bf16 sources exactly.
            intermediate = out_dir / "intermediate-BF16.gguf.tmp"
            written = write_gguf(source, intermediate, "BF16", progress)
            progress(0, None, f"quantizing to {target.quant} with llama.cpp")
            # A tied embedding is also the output head; 4-bit heads are the
            # reported cause of endless loops in Phi-4-mini, so keep 8 bits.
            tied = source.traits.tie_word_embeddings
            quantize_with_llama_cpp(intermediate, path, target.quant, embedding_q8=tied)
            intermediate.unlink()
            if tied:
                written["embedding_type"] = "Q8_0 (tied embedding and head)"

        self._check_tokenizer(source, path)
        info = self.describe(out_dir)
        options = {
            "gguf_file": path.name,
            "tensor_types": info.tensor_types,
            **{k: v for k, v in written.items() if k != "tensor_types"},
        }
        notes = _mixed_type_notes(target.quant, info.tensor_types)
        notes += runtime_caveats(source.traits)
        return BuildResult(
            options=options,
            notes=notes,
            stop_token_ids=sorted(
                {written["eos_token_id"], written["eot_token_id"]} - {None}
            ),
        )

    def _check_tokenizer(self, source: ModelSource, gguf_path: Path) -> None:
        import llama_cpp

        with captured_native_stderr("llama.cpp vocabulary load"):
            vocab = llama_cpp.Llama(
                model_path=str(gguf_path), vocab_only=True, verbose=False
            )
        try:
            check_tokenizer_parity(
                source,
                "llama.cpp",
                lambda text: vocab.tokenize(
                    text.encode(), add_bos=False, special=False
                ),
            )
        finally:
            vocab.close()

    def owns(self, path: Path) -> bool:
        return path.suffix == ".gguf" or (path.is_dir() and any(path.glob("*.gguf")))

    def describe(self, artifact_dir: Path) -> ArtifactInfo:
        from phiquant.backends.gguf.reader import describe_gguf

        return describe_gguf(find_gguf_file(artifact_dir))

    def load(self, artifact_dir: Path, *, context_tokens: int = 2048) -> Runner:
        from phiquant.backends.gguf.runner import LlamaCppRunner

        self.ensure_available()
        return LlamaCppRunner(find_gguf_file(artifact_dir), context_tokens)


def find_gguf_file(path: Path) -> Path:
    """The GGUF file of an artifact folder, or ``path`` itself if it is one."""
    path = Path(path)
    if path.is_file():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) != 1:
        raise ArtifactError(
            f"expected one .gguf file in {path}, found {len(files)}",
            "Pass a folder made by `phiquant quantize --to gguf:...` or a .gguf file",
        )
    return files[0]


def _mixed_type_notes(quant: str, tensor_types: dict[str, int]) -> list[str]:
    """Say plainly when llama.cpp stored weights in types other than asked."""
    total = sum(count for name, count in tensor_types.items() if name != "F32")
    if not total:
        return []
    wanted_prefix = quant.split("_")[0] + ("_K" if "_K" in quant else "")
    others = {
        name: count
        for name, count in tensor_types.items()
        if name != "F32" and not name.startswith(wanted_prefix)
    }
    if not others:
        return []
    shares = ", ".join(
        f"{name} {100 * count / total:.0f}%" for name, count in others.items()
    )
    return [f"{quant}: not every weight uses the requested type ({shares} of weights)"]


def runtime_caveats(traits) -> list[str]:
    """Where llama.cpp computes differently from the original model."""
    caveats = []
    window = traits.sliding_window
    if window and window < traits.max_position_embeddings:
        caveats.append(
            f"llama.cpp ignores Phi-3's {window}-token sliding window (it logs "
            "'Phi SWA is currently disabled'): outputs match the original up to "
            f"{window} tokens of context and differ beyond"
        )
    if traits.rope.kind == "longrope":
        switch = traits.original_max_position_embeddings
        caveats.append(
            "llama.cpp picks longrope's short or long factors from the context "
            f"size (n_ctx), not the sequence length: with n_ctx above {switch} it "
            "uses the long factors from the first token, where the original "
            f"switches only once a sequence passes {switch} tokens"
        )
    return caveats
