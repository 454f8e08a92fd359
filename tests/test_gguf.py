"""GGUF artifacts of the demo, built and run in real llama.cpp."""

import json

import pytest

from phiquant import api
from phiquant.artifacts import check_files, read_manifest
from phiquant.backends.gguf import find_gguf_file
from phiquant.backends.gguf.reader import describe_gguf, open_reader
from tests.conftest import SHORT_ANSWER_PROMPT
from tests.helpers import phiquant_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("quant", ["F32", "F16"])
def test_full_precision_gguf_matches_the_reference(quant, gguf_quality):
    result = gguf_quality(quant)
    assert result.top1_agreement >= 0.99
    assert result.kld_mean < 1e-3


def test_q8_0_gguf_stays_close_to_the_reference(gguf_quality):
    assert gguf_quality("Q8_0").kld_mean < 1e-2


def test_q4_k_m_is_further_from_the_reference_than_q8_0(gguf_quality):
    assert gguf_quality("Q8_0").kld_mean < gguf_quality("Q4_K_M").kld_mean < 0.5


@pytest.mark.parametrize("quant", ["F32", "F16", "Q8_0", "Q4_K_M"])
def test_every_gguf_stops_at_the_end_of_turn_token(quant, demo_ggufs):
    stream = api.run(demo_ggufs[quant].path, SHORT_ANSWER_PROMPT, max_tokens=128)
    text = "".join(stream)
    assert stream.result.finish_reason == "stop"
    assert stream.result.n_tokens < 128
    assert "4" in text
    # The build's own smoke test recorded the same in the manifest.
    smoke = read_manifest(demo_ggufs[quant].path)["smoke_test"]
    assert smoke["finish_reason"] == "stop"


def test_phiquant_run_streams_the_answer_from_the_command_line(demo_ggufs):
    result = phiquant_cli(
        "run", str(demo_ggufs["F16"].path), "--prompt", SHORT_ANSWER_PROMPT
    )
    assert result.returncode == 0, result.stderr
    assert "4" in result.stdout
    assert "before the end-of-turn token" not in result.stderr


@pytest.mark.parametrize("quant", ["F32", "F16", "Q8_0", "Q4_K_M"])
def test_manifest_matches_the_files(quant, demo_ggufs, demo_source):
    folder = demo_ggufs[quant].path
    manifest = read_manifest(folder)
    assert check_files(folder, manifest) == []
    assert manifest["target"]["format"] == quant
    assert manifest["source"]["content_sha256"] == demo_source.content_hash
    assert manifest["versions"]["llama_cpp_python"] == "0.3.36"
    assert manifest["size_bytes"] == find_gguf_file(folder).stat().st_size


def test_gguf_carries_what_llama_cpp_needs_to_run_the_demo_correctly(
    demo_ggufs, demo_source
):
    reader = open_reader(find_gguf_file(demo_ggufs["F16"].path))

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == "phi3"
    assert field("phi3.context_length") == 8192
    assert field("phi3.rope.freq_base") == 100000.0
    assert field("phi3.attention.head_count_kv") == 3
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "smollm"
    assert field("tokenizer.ggml.eos_token_id") == 2  # <|im_end|>, the turn end
    assert field("tokenizer.ggml.eot_token_id") == 2
    assert field("tokenizer.chat_template") == demo_source.chat_template
    assert len(field("tokenizer.ggml.merges")) == 48900
    # Tied embeddings: no separate output matrix, llama.cpp reuses token_embd.
    assert "output.weight" not in {t.name for t in reader.tensors}


def test_llama_cpp_tokenizes_wikitext_like_the_source(demo_ggufs, demo_source):
    from phiquant.evaluate.reference import tokenize_text
    from tests.conftest import WIKITEXT

    text = WIKITEXT.read_text("utf-8")[:5000]
    with api.load_artifact(demo_ggufs["Q8_0"].path) as runner:
        assert runner.tokenize(text) == tokenize_text(demo_source, text)


def test_k_quant_reports_the_real_type_mix(demo_ggufs):
    result = demo_ggufs["Q4_K_M"]
    types = describe_gguf(find_gguf_file(result.path)).tensor_types
    # 576-wide rows do not split into 256-wide k-quant blocks: llama.cpp falls
    # back per tensor, and the manifest and notes say so.
    assert "Q4_K" in types and "Q5_0" in types
    manifest = read_manifest(result.path)
    assert manifest["options"]["tensor_types"] == types
    assert any("Q5_0" in note for note in manifest["notes"])


def test_second_quantize_into_the_same_folder_is_refused(demo_ggufs):
    folder = demo_ggufs["Q8_0"].path
    before = json.loads((folder / "phiquant.json").read_text())
    result = phiquant_cli(
        "quantize", "demo", "--to", "gguf:int8", "--out", str(folder.parent)
    )
    assert result.returncode == 5
    assert result.stderr.strip() == (
        f"phiquant: {folder} already exists. Pass --force to replace it, or choose "
        "another --out"
    )
    assert json.loads((folder / "phiquant.json").read_text()) == before
