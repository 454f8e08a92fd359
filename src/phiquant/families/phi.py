"""phi-2: LayerNorm with biases, gelu_new, partial rotary, parallel blocks."""

from phiquant.families.base import Family

PHI = Family(
    name="phi",
    description="phi-2 layout (PhiForCausalLM)",
    architectures=("PhiForCausalLM",),
    model_types=("phi",),
    gguf_arch="phi2",
    gguf_permute_qk=False,
    fused_tensors=(),
    end_of_turn_tokens=("<|endoftext|>",),
    unsupported_reason=(
        "phi-2 (PhiForCausalLM) conversion is not implemented yet; "
        "Phi3ForCausalLM and LlamaForCausalLM checkpoints are supported"
    ),
)
