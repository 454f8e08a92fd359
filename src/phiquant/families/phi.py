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
    norm="layer",
    # phi-2 is a base model without a chat template; text ends at its EOS.
    end_of_turn_tokens=("<|endoftext|>",),
    layer_shapes=(
        ("self_attn.q_proj.weight", "q", "hidden"),
        ("self_attn.k_proj.weight", "kv", "hidden"),
        ("self_attn.v_proj.weight", "kv", "hidden"),
        ("self_attn.dense.weight", "hidden", "q"),
        ("mlp.fc1.weight", "ffn", "hidden"),
        ("mlp.fc2.weight", "hidden", "ffn"),
    ),
)
