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
    layer_shapes=(
        ("self_attn.q_proj.weight", "q", "hidden"),
        ("self_attn.k_proj.weight", "kv", "hidden"),
        ("self_attn.v_proj.weight", "kv", "hidden"),
        ("self_attn.o_proj.weight", "hidden", "q"),
        ("mlp.gate_proj.weight", "ffn", "hidden"),
        ("mlp.up_proj.weight", "ffn", "hidden"),
        ("mlp.down_proj.weight", "hidden", "ffn"),
    ),
)
