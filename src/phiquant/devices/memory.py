"""How much memory a model needs on a device: weights, KV cache and runtime.

KV cache: every layer keeps a key and a value vector per KV head per token,
so ``layers x kv_heads x head_dim x 2 x bytes`` per token of context
(Phi-3-mini, without grouped-query attention: 384 KiB per token at fp16;
Phi-4-mini, 8 KV heads: 128 KiB).
"""

from __future__ import annotations

from dataclasses import dataclass

# Resident memory of a runtime beyond weights and KV cache (its code, Python,
# compute buffers), measured on the demo as peak RSS - file size - KV cache.
RUNTIME_OVERHEAD_BYTES = {
    "gguf": 150_000_000,
    "onnx": 300_000_000,
    "openvino": 400_000_000,
    "mlx": 300_000_000,
}
DEFAULT_OVERHEAD_BYTES = 400_000_000


def kv_cache_bytes(kv_bytes_per_token: int, context_tokens: int) -> int:
    """KV cache for a context (see ``ModelTraits.kv_cache_bytes_per_token``)."""
    return kv_bytes_per_token * context_tokens


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes


def estimate_memory(
    weights_bytes: int, kv_bytes_per_token: int, backend: str, context_tokens: int
) -> MemoryEstimate:
    """Memory to run a model whose weights take ``weights_bytes`` on disk."""
    return MemoryEstimate(
        weights_bytes=weights_bytes,
        kv_cache_bytes=kv_cache_bytes(kv_bytes_per_token, context_tokens),
        overhead_bytes=RUNTIME_OVERHEAD_BYTES.get(backend, DEFAULT_OVERHEAD_BYTES),
    )
