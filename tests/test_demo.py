"""The built-in demo: trained SmolLM2-135M-Instruct re-laid out as Phi-3."""

import json

import pytest

from phiquant.sources.model import read_safetensors_header


def test_demo_checkpoint_is_phi3_layout_in_bf16(demo_source):
    folder = demo_source.path
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert (
        config["original_max_position_embeddings"] == config["max_position_embeddings"]
    )

    header = read_safetensors_header(folder / "model.safetensors")
    assert {entry["dtype"] for entry in header.values()} == {"BF16"}
    assert "model.layers.0.self_attn.qkv_proj.weight" in header
    assert "model.layers.0.mlp.gate_up_proj.weight" in header
    assert not any("q_proj" in name or "gate_proj." in name for name in header)
    # q (9 heads) + k and v (3 heads each) of 64 dims, stacked on rows.
    assert header["model.layers.0.self_attn.qkv_proj.weight"]["shape"] == [960, 576]
    assert header["model.layers.0.mlp.gate_up_proj.weight"]["shape"] == [3072, 576]


def test_demo_ships_tokenizer_chat_template_and_generation_config(demo_source):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_source.path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    # SmolLM2 splits numbers into single digits.
    assert tokenizer.tokenize("2024") == ["2", "0", "2", "4"]
    assert demo_source.generation_config["eos_token_id"] == 2


@pytest.mark.slow
def test_demo_logits_equal_transformers_own_load_of_the_gguf(demo_source):
    import torch
    from transformers import AutoModelForCausalLM

    from phiquant.sources.demo import demo_gguf_path, load_reference_from_gguf

    llama = load_reference_from_gguf(demo_gguf_path())
    with torch.no_grad():
        # The demo stores bf16; round the reference's weights the same way.
        for parameter in llama.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).float())
    phi3 = AutoModelForCausalLM.from_pretrained(demo_source.path, dtype=torch.float32)

    ids = torch.tensor(
        [[1, 9690, 198, 504, 3575, 282, 4649, 314, 7042, 30, 216, 34, 32]]
    )
    with torch.no_grad():
        assert torch.equal(phi3(ids).logits, llama(ids).logits)


@pytest.mark.slow
def test_demo_in_fp32_answers_the_capital_of_france(demo_source):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_source.path)
    model = AutoModelForCausalLM.from_pretrained(demo_source.path, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
    assert reply == "The capital of France is Paris.<|im_end|>"
