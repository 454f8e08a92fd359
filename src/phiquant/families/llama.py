"""Generic Llama layout: separate q/k/v and gate/up projections."""

from phiquant.families.base import Family

LLAMA = Family(
    name="llama",
    description="generic Llama layout (LlamaForCausalLM)",
    architectures=("LlamaForCausalLM",),
    model_types=("llama",),
    gguf_arch="llama",
    gguf_permute_qk=True,
    norm="rms",
    fused_tensors=(),
    end_of_turn_tokens=("<|eot_id|>", "<|im_end|>", "<|end|>"),
)
