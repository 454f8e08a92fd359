"""The Phi family's traps, on tiny models built from the real configs.

Every full-precision artifact, in every format, must reproduce transformers
on a sequence that crosses the sliding window and the longrope switch, keep
the chat template and stop at the chat's end-of-turn token. Where a runtime
knowingly computes differently (llama.cpp and mlx-lm ignore Phi-3's sliding
window), the outputs must match up to the window and the manifest must say so.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from phiquant import api
from phiquant.artifacts import read_manifest
from phiquant.backends import get_backend
from phiquant.backends.gguf import find_gguf_file
from phiquant.backends.gguf.reader import open_reader
from phiquant.evaluate.metrics import per_position_kld
from tests.tiny_models import LONGROPE_SWITCH, SLIDING_WINDOW

pytestmark = pytest.mark.slow
VARIANTS = [
    "Phi-3-mini-4k-instruct",
    "Phi-3.5-mini-instruct",
    "Phi-4-mini-instruct",
    "phi-2",
]
FULL_PRECISION = ["gguf:fp32", "onnx:fp32", "openvino:fp32", "mlx:fp32"]
# (variant, backend) pairs whose runtime drops the sliding window, with the
# words their manifest uses to say so.
IGNORES_WINDOW = {
    ("Phi-3-mini-4k-instruct", "gguf"): "ignores Phi-3's 191-token sliding window",
    ("Phi-3-mini-4k-instruct", "mlx"): "ignores the sliding window (191",
}


@pytest.fixture(scope="module")
def tiny_artifact(tiny_phi, tmp_path_factory):
    """(variant, target) -> QuantizeResult, each built once per module."""
    built = {}

    def get(name: str, target: str):
        if (name, target) not in built:
            source = tiny_phi(name)[0]
            out = tmp_path_factory.mktemp(f"{name}-{target.replace(':', '-')}")
            (built[name, target],) = api.quantize(
                source.path, [target], out=out, prompt=None
            )
        return built[name, target]

    return get


def _score(result, tokens) -> np.ndarray:
    with api.load_artifact(result.path, context_tokens=512) as runner:
        return runner.score(tokens)


@pytest.mark.parametrize("target", FULL_PRECISION)
@pytest.mark.parametrize("name", VARIANTS)
def test_full_precision_matches_transformers(name, target, tiny_phi, tiny_artifact):
    _, tokens, reference = tiny_phi(name)
    result = tiny_artifact(name, target)
    logits = _score(result, tokens)
    kld = per_position_kld(reference, logits)
    same_top1 = reference.argmax(-1) == logits.argmax(-1)

    caveat = IGNORES_WINDOW.get((name, target.split(":")[0]))
    if caveat is None:
        # The whole sequence, past the window and the longrope switch.
        assert len(tokens) > max(SLIDING_WINDOW, LONGROPE_SWITCH)
        assert kld.mean() < 1e-3
        assert same_top1.mean() >= 0.99
    else:
        assert kld[:SLIDING_WINDOW].mean() < 1e-3
        assert same_top1[:SLIDING_WINDOW].mean() >= 0.99
        assert kld[SLIDING_WINDOW:].mean() > 1e-2  # the runtime's known difference
        assert any(caveat in note for note in result.notes)


def _chat_template(path) -> str | None:
    """The chat template as the artifact's runtime finds it."""
    gguf_files = list(path.glob("*.gguf"))
    if gguf_files:
        field = open_reader(gguf_files[0]).fields.get("tokenizer.chat_template")
        return None if field is None else field.contents()
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text()
    config = json.loads((path / "tokenizer_config.json").read_text())
    return config.get("chat_template")


@pytest.mark.parametrize("target", FULL_PRECISION)
@pytest.mark.parametrize("name", VARIANTS)
def test_chat_template_and_end_of_turn_survive(name, target, tiny_phi, tiny_artifact):
    source = tiny_phi(name)[0]
    result = tiny_artifact(name, target)
    assert _chat_template(result.path) == source.chat_template
    # A chat turn ends at <|end|>; phi-2, a base model, only at <|endoftext|>.
    end = source.token_id("<|end|>" if source.chat_template else "<|endoftext|>")
    assert end in read_manifest(result.path)["stop_token_ids"]
    with api.load_artifact(result.path) as runner:
        assert end in runner.stop_token_ids


@pytest.mark.parametrize("name", VARIANTS)
def test_gguf_ends_generation_at_the_end_of_turn(name, tiny_phi, tiny_artifact):
    source = tiny_phi(name)[0]
    reader = open_reader(find_gguf_file(tiny_artifact(name, "gguf:fp32").path))
    end_id = source.token_id("<|end|>" if source.chat_template else "<|endoftext|>")
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == end_id


def test_partial_rotary_is_written_for_phi4_mini(tiny_artifact):
    path = tiny_artifact("Phi-4-mini-instruct", "gguf:fp32").path
    reader = open_reader(find_gguf_file(path))
    assert reader.fields["phi3.rope.dimension_count"].contents() == 48  # 0.75 x 64
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names  # tied head
    assert {"rope_factors_long.weight", "rope_factors_short.weight"} <= names


def test_phi2_gguf_keeps_layernorm_biases_and_partial_rotary(tiny_artifact):
    reader = open_reader(find_gguf_file(tiny_artifact("phi-2", "gguf:fp32").path))
    assert reader.fields["general.architecture"].contents() == "phi2"
    assert reader.fields["phi2.rope.dimension_count"].contents() == 32  # 0.4 x 80
    assert "phi2.attention.layer_norm_epsilon" in reader.fields
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_norm.bias", "blk.0.ffn_up.bias", "output.bias"} <= names


@pytest.mark.parametrize("name", ["Phi-3-mini-4k-instruct", "Phi-3.5-mini-instruct"])
def test_sentencepiece_vocabulary_is_written_as_llama_tokenizer(
    name, tiny_phi, tiny_artifact
):
    reader = open_reader(find_gguf_file(tiny_artifact(name, "gguf:fp32").path))
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[3:5] == ["<0x00>", "<0x01>"]


# Sensitive tensors: a tied embedding is also the output head.


def test_gguf_int4_keeps_a_tied_embedding_at_8_bits(tiny_artifact):
    result = tiny_artifact("Phi-4-mini-instruct", "gguf:int4")
    reader = open_reader(find_gguf_file(result.path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == "Q8_0"
    manifest = read_manifest(result.path)
    assert manifest["options"]["embedding_type"] == "Q8_0 (tied embedding and head)"


def test_inspect_shows_the_traps_before_converting(tiny_phi):
    report = api.inspect(tiny_phi("Phi-4-mini-instruct")[0].path)
    traits = report["traits"]
    assert traits["rope_kind"] == "longrope"
    assert traits["longrope_switch_tokens"] == LONGROPE_SWITCH
    assert traits["rotary_dim"] == 48
    assert traits["tied_embeddings"] is True
    assert report["end_of_turn_token"] == "<|end|>"
    window = api.inspect(tiny_phi("Phi-3-mini-4k-instruct")[0].path)["traits"]
    assert window["sliding_window"] == SLIDING_WINDOW
    assert np.isclose(window["kv_cache_bytes_per_token_fp16"], 2 * 4 * 32 * 2 * 2)
    phi2 = api.inspect(tiny_phi("phi-2")[0].path)
    assert (phi2["traits"]["norm"], phi2["traits"]["activation"]) == (
        "LayerNorm",
        "gelu_new",
    )
    assert phi2["traits"]["rotary_dim"] == 32
    assert phi2["chat_template"] is False


def test_onnx_int4_keeps_a_tied_head_at_int8(tiny_artifact):
    result = tiny_artifact("Phi-4-mini-instruct", "onnx:int4")
    options = read_manifest(result.path)["options"]
    # The builder cannot share an int8 head with the lookup under its default
    # algorithm, so the lookup reads its own int4 copy (embedding=float keeps it).
    assert (options["head"], options["embedding"]) == ("int8", "int4")
    assert options["builder_extra_options"]["matmul_mixed_precision"] == (
        "last_matmul:int8"
    )
    assert any("head is kept at int8" in note for note in result.notes)


def test_openvino_int4_keeps_the_tied_embedding_at_8_bits(tiny_artifact):
    import openvino as ov

    result = tiny_artifact("Phi-4-mini-instruct", "openvino:int4")
    model = ov.Core().read_model(result.path / "openvino_model.xml")
    embedding_types = {
        op.get_output_element_type(0).get_type_name()
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
        and "embed_tokens" in op.get_friendly_name()
        and len(op.get_output_shape(0)) == 2
        and op.get_output_shape(0)[1] > 1  # the table, not its scales
    }
    assert embedding_types == {"u8"}
    assert read_manifest(result.path)["options"]["embedding_and_head"] == "int8_asym"
    assert "i4" in get_backend("openvino").describe(result.path).tensor_types


def test_mlx_int4_keeps_the_tied_embedding_at_8_bits(tiny_artifact):
    result = tiny_artifact("Phi-4-mini-instruct", "mlx:int4")
    config = json.loads((result.path / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    assert read_manifest(result.path)["options"]["embedding_bits"] == 8
    assert any("tied embedding" in note for note in result.notes)


# Runtime limits and base models.


def test_onnx_window_model_keeps_generating_past_its_window(tiny_phi, tiny_artifact):
    _, tokens, _ = tiny_phi("Phi-3-mini-4k-instruct")
    result = tiny_artifact("Phi-3-mini-4k-instruct", "onnx:fp32")
    with api.load_artifact(result.path) as runner:
        generated = list(runner.generate_ids(tokens[:150], 100))
    assert len(generated) == 100  # GenAI's own window handling failed at 207
    config = json.loads((result.path / "genai_config.json").read_text())
    assert "sliding_window" not in config["model"]["decoder"]
    assert any("sliding window in the graph" in note for note in result.notes)


def test_onnx_refuses_a_rotary_size_its_attention_cannot_run(tiny_phi, tmp_path):
    from phiquant.errors import UsageError

    source = tiny_phi("phi-2")[0]
    folder = tmp_path / "odd-rotary"
    folder.mkdir()
    for path in source.path.iterdir():
        (folder / path.name).symlink_to(path)
    config = json.loads((source.path / "config.json").read_text())
    config["partial_rotary_factor"] = 0.3  # 24 of 80 dimensions
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="rotates 24 of 80 dimensions"):
        api.quantize(folder, ["onnx:int4"], out=tmp_path / "out", prompt=None)
    assert not (tmp_path / "out").exists()


def test_base_model_is_verified_by_continuing_text_and_refused_for_chat(
    tiny_phi, tmp_path
):
    from phiquant.errors import ArtifactError

    source = tiny_phi("phi-2")[0]
    (result,) = api.quantize(source.path, ["gguf:int8"], out=tmp_path)
    assert result.answer is None
    assert any("no chat template" in note for note in result.notes)
    assert api.verify(result.path).answer is None
    with pytest.raises(ArtifactError, match="no chat template"):
        api.run(result.path, "Hello")
