"""What phiquant knows about one architecture family, as plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One layout of weights and the facts a converter needs about it.

    Adding a model family means adding one of these tables, not new branches
    in the backends.
    """

    name: str
    description: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    # Architecture name in gguf-py's MODEL_ARCH_NAMES (what llama.cpp loads).
    gguf_arch: str
    # llama.cpp's "llama" graph rotates interleaved pairs while Hugging Face
    # rotates halves, so q/k rows must be reordered when writing GGUF.
    gguf_permute_qk: bool
    # Hugging Face tensors that hold several projections stacked on rows.
    fused_tensors: tuple[str, ...]
    # "rms" (RMSNorm, Phi-3 and Llama) or "layer" (LayerNorm with bias, phi-2):
    # runtimes store the two epsilons under different keys.
    norm: str
    # Tokens that end a chat turn in this family's templates, most specific first.
    end_of_turn_tokens: tuple[str, ...]
    # Each layer's weight matrices (name after ``model.layers.N.``) and their
    # shape in named sizes: hidden, q (heads x head_dim), kv (KV heads x
    # head_dim), qkv (q + 2 kv), ffn (intermediate) and ffn2 (2 x ffn).
    layer_shapes: tuple[tuple[str, str, str], ...] = ()
    # None when phiquant converts this family; otherwise why it cannot yet.
    unsupported_reason: str | None = None

    @property
    def supported(self) -> bool:
        return self.unsupported_reason is None
