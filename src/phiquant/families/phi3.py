"""Phi-3, Phi-3.5, Phi-4-mini and Phi-4: fused qkv and gate/up projections."""

from phiquant.families.base import Family

PHI3 = Family(
    name="phi3",
    description="Phi-3 / Phi-3.5 / Phi-4-mini / Phi-4 layout (Phi3ForCausalLM)",
    architectures=("Phi3ForCausalLM",),
    model_types=("phi3",),
    gguf_arch="phi3",
    gguf_permute_qk=False,
    norm="rms",
    fused_tensors=("self_attn.qkv_proj", "mlp.gate_up_proj"),
    end_of_turn_tokens=("<|end|>", "<|im_end|>", "<|eot_id|>"),
    layer_shapes=(
        ("self_attn.qkv_proj.weight", "qkv", "hidden"),
        ("self_attn.o_proj.weight", "hidden", "q"),
        ("mlp.gate_up_proj.weight", "ffn2", "hidden"),
        ("mlp.down_proj.weight", "hidden", "ffn"),
    ),
)
