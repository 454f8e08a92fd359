"""K-quants and Q4_0 through llama.cpp's own quantizer (llama-cpp-python)."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from phiquant.errors import ArtifactError
from phiquant.native_output import captured_native_stderr

# Format name -> llama_ftype. Tensors whose rows do not fit a k-quant's
# 256-wide super-blocks fall back per tensor inside llama.cpp.
LLAMA_QUANTIZED = {
    "Q4_0": 2,  # LLAMA_FTYPE_MOSTLY_Q4_0
    "Q4_K_M": 15,  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    "Q5_K_M": 17,  # LLAMA_FTYPE_MOSTLY_Q5_K_M
    "Q6_K": 18,  # LLAMA_FTYPE_MOSTLY_Q6_K
}


GGML_TYPE_Q8_0 = 8


def quantize_with_llama_cpp(
    source_gguf: Path, out_gguf: Path, quant: str, *, embedding_q8: bool = False
) -> None:
    """Re-encode a BF16/F16/F32 GGUF into ``quant`` with llama_model_quantize.

    ``embedding_q8`` stores the token embedding in Q8_0 whatever ``quant`` is.
    """
    import llama_cpp

    # llama.cpp prints every tensor it quantizes; keep only its errors.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_QUANTIZED[quant]
    params.nthread = os.cpu_count() or 1
    if embedding_q8:
        params.token_embedding_type = GGML_TYPE_Q8_0
    with captured_native_stderr(f"llama.cpp quantize to {quant}"):
        status = llama_cpp.llama_model_quantize(
            str(source_gguf).encode(), str(out_gguf).encode(), ctypes.byref(params)
        )
    if status != 0:
        raise ArtifactError(
            f"llama.cpp failed to quantize to {quant} (status {status})",
            "Run again with --debug to see llama.cpp's log",
        )
