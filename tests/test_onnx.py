"""ONNX artifacts of the demo, built by onnxruntime-genai, run in ONNX Runtime GenAI."""

import dataclasses
import json

import numpy as np
import pytest

from phiquant import api
from phiquant.artifacts import check_files, read_manifest
from phiquant.backends import get_backend, resolve_target
from phiquant.backends.onnx.options import resolve_options
from phiquant.errors import UsageError
from tests.conftest import SHORT_ANSWER_PROMPT
from tests.helpers import phiquant_cli

DEMO_HEAD_WEIGHTS = 49152 * 576  # vocabulary x hidden size


@pytest.fixture(scope="module")
def onnx_artifacts(tmp_path_factory):
    """fp32, int8 and int4 (default options) for the CPU, built once."""
    out = tmp_path_factory.mktemp("onnx")
    results = api.quantize(
        "demo",
        ["onnx:fp32", "onnx:int8", "onnx:int4"],
        out=out,
        prompt=SHORT_ANSWER_PROMPT,
    )
    return {result.target.quant: result for result in results}


@pytest.fixture(scope="module")
def pure_int4(tmp_path_factory, demo_source):
    """int4 with the head at int4 and the embedding sharing it: the small variant."""
    backend = get_backend("onnx")
    target = dataclasses.replace(
        resolve_target("onnx:int4"), options={"head": "int4", "embedding": "shared"}
    )
    folder = tmp_path_factory.mktemp("onnx-pure-int4")
    built = backend.build(demo_source, target, folder)
    return folder, built


@pytest.fixture(scope="module")
def onnx_quality(onnx_artifacts, wikitext_window, reference_logits):
    from phiquant.evaluate.metrics import compare

    scores = {}

    def quality(quant: str):
        if quant not in scores:
            with api.load_artifact(onnx_artifacts[quant].path) as runner:
                logits = runner.score(wikitext_window)
            scores[quant] = compare(reference_logits, logits, wikitext_window)
        return scores[quant]

    return quality


@pytest.mark.slow
def test_fp32_onnx_matches_the_reference(onnx_quality):
    result = onnx_quality("fp32")
    assert result.top1_agreement >= 0.99
    assert result.kld_mean < 1e-3


@pytest.mark.slow
def test_int8_onnx_stays_close_to_the_reference(onnx_quality):
    assert onnx_quality("int8").kld_mean < 1e-2


@pytest.mark.slow
def test_int4_onnx_is_further_from_the_reference_than_int8(onnx_quality):
    assert onnx_quality("int8").kld_mean < onnx_quality("int4").kld_mean < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["fp32", "int8", "int4"])
def test_every_onnx_artifact_stops_at_the_end_of_turn_token(quant, onnx_artifacts):
    stream = api.run(onnx_artifacts[quant].path, SHORT_ANSWER_PROMPT, max_tokens=128)
    text = "".join(stream)
    assert stream.result.finish_reason == "stop"
    assert stream.result.n_tokens < 128
    assert "4" in text
    assert read_manifest(onnx_artifacts[quant].path)["smoke_test"]["finish_reason"] == (
        "stop"
    )


@pytest.mark.slow
def test_int4_folder_runs_in_onnxruntime_genai_unchanged(onnx_artifacts, demo_source):
    import onnxruntime_genai as og

    folder = onnx_artifacts["int4"].path
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    messages = json.dumps([{"role": "user", "content": SHORT_ANSWER_PROMPT}])
    prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + 128)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids)
    reply = []
    while not generator.is_done():
        generator.generate_next_token()
        reply.append(int(generator.get_next_tokens()[0]))

    # GenAI itself ended the reply at the chat's end-of-turn token <|im_end|>.
    assert len(reply) < 128
    assert reply[-1] == demo_source.end_of_turn_token[1] == 2
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["eos_token_id"] == list(demo_source.stop_token_ids)


@pytest.mark.slow
def test_generate_ids_decodes_past_the_end_of_turn_token(onnx_artifacts):
    import onnxruntime_genai as og

    folder = onnx_artifacts["int4"].path
    tokenizer = og.Tokenizer(og.Model(str(folder)))
    messages = json.dumps([{"role": "user", "content": SHORT_ANSWER_PROMPT}])
    prompt = [int(i) for i in tokenizer.encode(tokenizer.apply_chat_template(messages))]
    with api.load_artifact(folder) as runner:
        reply = runner.chat(
            [{"role": "user", "content": SHORT_ANSWER_PROMPT}]
        ).collect()
        ids = list(runner.generate_ids(prompt, reply.n_tokens + 16))

    # The same greedy path as chat, then on past <|im_end|> instead of stopping.
    assert ids[reply.n_tokens] == 2
    assert len(ids) == reply.n_tokens + 16


@pytest.mark.slow
def test_manifest_records_every_int4_choice(onnx_artifacts, demo_source):
    folder = onnx_artifacts["int4"].path
    manifest = read_manifest(folder)
    assert check_files(folder, manifest) == []
    assert manifest["target"]["name"] == "onnx:int4@cpu"
    assert manifest["source"]["content_sha256"] == demo_source.content_hash
    options = manifest["options"]
    # The demo ties its embedding to its head: the default keeps the head at int8.
    assert {k: options[k] for k in ("block_size", "accuracy_level", "algorithm")} == {
        "block_size": 32,
        "accuracy_level": 4,
        "algorithm": "default",
    }
    assert (options["symmetric"], options["head"], options["embedding"]) == (
        True,
        "int8",
        "int4",
    )
    assert options["builder_extra_options"]["matmul_mixed_precision"] == (
        "last_matmul:int8"
    )
    assert manifest["stop_token_ids"] == [2]
    assert manifest["versions"]["onnxruntime-genai"] == "0.18.0"


@pytest.mark.slow
def test_the_graph_shows_the_head_at_int8(onnx_artifacts, demo_source):
    int4 = onnx_artifacts["int4"].info
    assert int4.tensor_types["int8"] == DEMO_HEAD_WEIGHTS
    fp32 = onnx_artifacts["fp32"].info
    # Tied embeddings stay shared in fp32: exactly the source's parameters.
    assert fp32.parameter_count == sum(demo_source.dtype_histogram().values())
    assert fp32.tensor_types == {"fp32": fp32.parameter_count}
    assert 4.5 < int4.bits_per_weight < 6.5


@pytest.mark.slow
def test_head_and_embedding_options_reach_the_builder(pure_int4, onnx_artifacts):
    folder, built = pure_int4
    info = get_backend("onnx").describe(folder)
    assert "int8" not in info.tensor_types
    assert info.size_bytes < onnx_artifacts["int4"].info.size_bytes
    assert built.options["head"] == "int4"
    assert built.options["embedding_shared"] is True
    with get_backend("onnx").load(folder) as runner:
        logits = runner.score(list(range(100, 132)))
    assert logits.shape == (32, 49152)
    assert np.isfinite(logits).all()


@pytest.mark.slow
def test_onnx_tokenizes_wikitext_like_the_source(onnx_artifacts, demo_source):
    from phiquant.evaluate.reference import tokenize_text
    from tests.conftest import WIKITEXT

    text = WIKITEXT.read_text("utf-8")[:5000]
    with api.load_artifact(onnx_artifacts["int8"].path) as runner:
        assert runner.tokenize(text) == tokenize_text(demo_source, text)


def test_onnx_targets_default_to_the_cpu_provider():
    target = resolve_target("onnx:int4")
    assert (target.name, target.slug) == ("onnx:int4@cpu", "onnx-int4-cpu")
    assert resolve_target("onnx:fp16@cuda").device == "cuda"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("onnx:fp16", "onnx:fp16 cannot run on the CPU provider (ONNX Runtime's CPU"),
        ("onnx:fp16@cpu", "onnx:fp16 cannot run on the CPU provider"),
        ("onnx:int8@dml", "onnx:int8 cannot run on the DirectML provider"),
        ("onnx:fp32@webgpu", "onnx:fp32 cannot run on the WebGPU provider"),
        ("onnx:int4@npu", "onnx targets take no device 'npu'"),
        ("onnx:int2", "onnx has no precision 'int2'"),
    ],
)
def test_combinations_that_cannot_run_are_refused_in_one_line(text, message):
    with pytest.raises(UsageError) as refused:
        resolve_target(text)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_fp16_on_cpu_refusal_names_what_works():
    with pytest.raises(UsageError) as refused:
        resolve_target("onnx:fp16@cpu")
    assert "On cpu use onnx:{fp32,int8,int4}@cpu" in str(refused.value)
    assert "onnx:fp16 runs on @cuda, @dml" in str(refused.value)


@pytest.mark.parametrize(
    ("precision", "options", "tied", "message"),
    [
        ("int4", {"int4_accuracy_level": 1}, True, "unknown onnx option(s)"),
        ("int4", {"block_size": 48}, True, "onnx option block_size=48"),
        ("int4", {"accuracy_level": "5"}, True, "onnx option accuracy_level='5'"),
        ("int4", {"algorithm": "hqq"}, True, "onnx option algorithm='hqq'"),
        ("int4", {"symmetric": "maybe"}, True, "onnx option symmetric='maybe'"),
        (
            "int4",
            {"symmetric": False, "embedding": "shared"},
            True,
            "asymmetric int4 with a shared embedding",
        ),
        (
            "int4",
            {"head": "int8", "embedding": "shared"},
            True,
            "an int8 head cannot be shared with the embedding under algorithm=default",
        ),
        ("int4", {"embedding": "shared"}, False, "embedding=shared needs a model"),
        ("int8", {"head": "int4"}, True, "onnx:int8 quantizes every MatMul to int8"),
        ("int8", {"embedding": "int4"}, True, "onnx:int8 cannot store the embedding"),
        ("fp32", {"block_size": 32}, True, "onnx:fp32 takes no quantization options"),
    ],
)
def test_options_that_would_not_work_are_refused_in_one_line(
    precision, options, tied, message
):
    with pytest.raises(UsageError) as refused:
        resolve_options(precision, "cpu", options, tied_embeddings=tied)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_option_defaults_keep_a_tied_head_at_int8_and_the_rest_at_builder_defaults():
    tied = resolve_options("int4", "cpu", {}, tied_embeddings=True)
    assert (tied.block_size, tied.accuracy_level, tied.algorithm) == (32, 4, "default")
    assert (tied.head, tied.embedding) == ("int8", "int4")
    untied = resolve_options("int4", "cpu", {}, tied_embeddings=False)
    assert (untied.head, untied.embedding) == ("int4", "float")
    # A shared int8 head is possible where the builder names its tensors right.
    rtn = resolve_options("int4", "cuda", {"algorithm": "rtn"}, tied_embeddings=True)
    assert (rtn.head, rtn.embedding, rtn.accuracy_level) == ("int8", "shared", 0)
    # Values arrive as text from a command line.
    text = resolve_options(
        "int4", "cpu", {"block_size": "128", "symmetric": "false"}, tied_embeddings=True
    )
    assert (text.block_size, text.symmetric, text.embedding) == (128, False, "int4")


def test_quantize_refuses_fp16_on_cpu_before_reading_the_model():
    result = phiquant_cli("quantize", "demo", "--to", "onnx:fp16@cpu")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("phiquant: onnx:fp16 cannot run on the CPU provider")


def test_genai_config_lists_the_turn_end_beside_eos(tmp_path):
    from phiquant.backends.onnx.build import write_stop_tokens

    # What the builder writes for Phi-3: only <|endoftext|> as EOS.
    (tmp_path / "genai_config.json").write_text(
        json.dumps({"model": {"eos_token_id": 32000, "type": "phi3"}})
    )
    write_stop_tokens(tmp_path, [32000, 32007])
    config = json.loads((tmp_path / "genai_config.json").read_text())
    assert config["model"]["eos_token_id"] == [32000, 32007]
