"""OpenVINO IR artifacts of the demo: optimum-intel export, NNCF, run in GenAI."""

from __future__ import annotations

import json
import shutil

import pytest

from phiquant import api
from phiquant.artifacts import check_files, read_manifest
from phiquant.backends import get_backend, resolve_target
from phiquant.backends.openvino.options import compression_settings
from phiquant.errors import UsageError
from phiquant.targets import Target
from tests.conftest import SHORT_ANSWER_PROMPT
from tests.helpers import phiquant_cli

TARGETS = ("openvino:fp16", "openvino:int8", "openvino:int4")
TINY_VARIANTS = (
    "Phi-3-mini-4k-instruct",
    "Phi-3.5-mini-instruct",
    "Phi-4-mini-instruct",
)


@pytest.fixture(scope="module")
def demo_irs(tmp_path_factory):
    """FP16, INT8_ASYM and INT4_SYM (default options) IRs, through the public API."""
    out = tmp_path_factory.mktemp("openvino")
    results = api.quantize("demo", list(TARGETS), out=out, prompt=SHORT_ANSWER_PROMPT)
    return {result.target.quant: result for result in results}


@pytest.fixture(scope="module")
def ir_quality(demo_irs, wikitext_window, reference_logits):
    """quant -> Comparison against the fp32 reference, scored once per module."""
    from phiquant.evaluate.metrics import compare

    scores = {}

    def quality(quant: str):
        if quant not in scores:
            with api.load_artifact(demo_irs[quant].path) as runner:
                logits = runner.score(wikitext_window)
            scores[quant] = compare(reference_logits, logits, wikitext_window)
        return scores[quant]

    return quality


# Options: checked before any export starts.


def test_generic_precisions_map_to_nncf_formats():
    assert resolve_target("openvino:int4").quant == "INT4_SYM"
    assert resolve_target("openvino:int8").quant == "INT8_ASYM"
    assert resolve_target("openvino:fp16").quant == "FP16"
    assert resolve_target("openvino:int4_asym").quant == "INT4_ASYM"
    with pytest.raises(UsageError, match="openvino has no precision 'Q4_K_M'"):
        resolve_target("openvino:Q4_K_M")


def test_int4_group_size_falls_back_to_one_that_divides_the_rows(demo_source):
    settings = compression_settings("INT4_SYM", {}, demo_source.traits)
    assert (settings.requested_group_size, settings.group_size) == (128, 64)
    assert settings.notes == [
        "int4 group size 128 does not divide the 576/1536-wide weight rows; "
        "used group size 64"
    ]
    assert (settings.ratio, settings.data_aware) == (0.6, False)


@pytest.mark.parametrize("group_size", [32, 64, 96, -1])
def test_int4_keeps_a_group_size_that_divides_the_rows(group_size, demo_source):
    settings = compression_settings(
        "INT4_ASYM", {"group_size": group_size}, demo_source.traits
    )
    assert settings.group_size == group_size
    assert settings.notes == []


def test_options_written_as_command_line_strings_are_read(demo_source):
    settings = compression_settings(
        "INT4_SYM",
        {"group_size": "32", "ratio": "1", "awq": "true", "calibration_samples": "4"},
        demo_source.traits,
    )
    assert (settings.group_size, settings.ratio, settings.awq) == (32, 1.0, True)
    assert settings.calibration.samples == 4
    assert settings.calibration.text_path is None  # phiquant's default text


@pytest.mark.parametrize(
    ("quant", "options", "message"),
    [
        ("INT4_SYM", {"bits": 4}, "openvino:INT4_SYM has no option bits"),
        ("INT4_SYM", {"ratio": 1.5}, r"ratio must lie in \(0, 1\], got 1.5"),
        ("INT4_SYM", {"group_size": 0}, "group_size must be positive or -1"),
        ("INT4_SYM", {"awq": "maybe"}, "awq must be true or false"),
        ("INT4_SYM", {"calibration_samples": 8}, "no data-aware mode is on"),
        (
            "INT4_SYM",
            {"gptq": True, "calibration_text": "/nonexistent.txt"},
            "no calibration text file at /nonexistent.txt",
        ),
        ("FP16", {"ratio": 0.5}, "openvino:FP16 takes no options"),
        ("INT8_ASYM", {"group_size": 64}, "openvino:INT8_ASYM takes no options"),
    ],
)
def test_bad_options_are_refused_with_one_line(quant, options, message, demo_source):
    with pytest.raises(UsageError, match=message) as caught:
        compression_settings(quant, options, demo_source.traits)
    assert "\n" not in caught.value.message


def test_bad_command_line_option_is_refused_before_any_build(tmp_path):
    result = phiquant_cli(
        "quantize", "demo", "--to", "openvino:int4", "--option", "openvino.ratio=2",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "phiquant: ratio must lie in (0, 1], got 2.0. ratio is the share of layers "
        "in int4; the rest stay int8"
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_options_fail_before_the_export_writes_anything(demo_source, tmp_path):
    target = Target("openvino", "INT4_SYM", "int4", options={"ratio": 0})
    with pytest.raises(UsageError, match="ratio must lie in"):
        get_backend("openvino").build(demo_source, target, tmp_path)
    assert list(tmp_path.iterdir()) == []


# Built artifacts, run in OpenVINO.


@pytest.mark.slow
def test_fp16_ir_matches_the_reference(ir_quality):
    result = ir_quality("FP16")
    assert result.top1_agreement >= 0.99
    assert result.kld_mean < 1e-3


@pytest.mark.slow
def test_int8_ir_stays_close_to_the_reference(ir_quality):
    assert ir_quality("INT8_ASYM").kld_mean < 1e-2


@pytest.mark.slow
def test_int4_is_further_from_the_reference_than_int8(ir_quality):
    assert ir_quality("INT8_ASYM").kld_mean < ir_quality("INT4_SYM").kld_mean < 0.5


@pytest.mark.slow
def test_awq_calibrates_offline_and_halves_the_int4_error(
    demo_irs, demo_source, ir_quality, wikitext_window, reference_logits, tmp_path
):
    from phiquant.backends.openvino.compress import compress_ir
    from phiquant.evaluate.metrics import compare

    # The data-aware build step on a copy of the fp16 export: the export is the
    # same for every int4 option, and sharing it keeps this test short.
    fp16 = demo_irs["FP16"].path
    for path in fp16.iterdir():
        if path.name != "phiquant.json":
            shutil.copy(path, tmp_path / path.name)
    options = {"awq": True, "calibration_samples": 4, "calibration_tokens": 32}
    settings = compression_settings("INT4_SYM", options, demo_source.traits)
    compress_ir(tmp_path, settings, demo_source)

    # A bare IR folder, without phiquant's manifest, is recognised and opened.
    stored = api.inspect(tmp_path)["metadata"]["weight_compression"]
    assert (stored["awq"], stored["group_size"]) == ("True", "64")
    with api.load_artifact(tmp_path) as runner:
        result = compare(
            reference_logits, runner.score(wikitext_window), wikitext_window
        )
    data_free = ir_quality("INT4_SYM")
    assert result.kld_mean < 0.75 * data_free.kld_mean
    assert result.perplexity < data_free.perplexity


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["FP16", "INT8_ASYM", "INT4_SYM"])
def test_every_ir_stops_at_the_end_of_turn_token(quant, demo_irs):
    stream = api.run(demo_irs[quant].path, SHORT_ANSWER_PROMPT, max_tokens=128)
    text = "".join(stream)
    assert stream.result.finish_reason == "stop"
    assert stream.result.n_tokens < 128
    assert "4" in text
    smoke = read_manifest(demo_irs[quant].path)["smoke_test"]
    assert smoke["finish_reason"] == "stop"


@pytest.mark.slow
def test_phiquant_run_streams_the_answer_from_the_command_line(demo_irs):
    folder = demo_irs["INT4_SYM"].path
    result = phiquant_cli("run", str(folder), "--prompt", SHORT_ANSWER_PROMPT)
    assert result.returncode == 0, result.stderr
    assert "4" in result.stdout
    assert "before the end-of-turn token" not in result.stderr


@pytest.mark.slow
def test_int4_manifest_records_the_group_size_it_used(demo_irs):
    folder = demo_irs["INT4_SYM"].path
    manifest = read_manifest(folder)
    options = manifest["options"]
    assert options["group_size"] == 64
    assert options["requested_group_size"] == 128
    assert (options["ratio"], options["nncf_mode"]) == (0.6, "int4_sym")
    assert options["data_aware"] is False
    assert any("used group size 64" in note for note in manifest["notes"])
    # The IR itself agrees: NNCF wrote what it did into the model's rt_info.
    stored = get_backend("openvino").describe(folder).metadata["weight_compression"]
    assert (stored["group_size"], stored["ratio"]) == ("64", "0.6")
    # ratio 0.6 leaves int8 layers beside the int4 ones; the mix is recorded.
    assert {"i4", "u8"} <= set(options["tensor_types"])


@pytest.mark.slow
def test_folder_opens_unchanged_in_openvino_genai(demo_irs, demo_source):
    import openvino_genai

    folder = demo_irs["INT4_SYM"].path
    for name in ("openvino_tokenizer.xml", "openvino_detokenizer.xml"):
        assert (folder / name).is_file()
    pipeline = openvino_genai.LLMPipeline(str(folder), "CPU")
    end_of_turn = demo_source.end_of_turn_token[1]
    assert end_of_turn in pipeline.get_generation_config().stop_token_ids
    chat = openvino_genai.ChatHistory([{"role": "user", "content": "What is 2 + 2?"}])
    result = pipeline.generate(chat, max_new_tokens=64)
    assert result.finish_reasons == [openvino_genai.GenerationFinishReason.STOP]
    assert "4" in result.texts[0]


@pytest.mark.slow
def test_generation_config_lists_the_source_stop_tokens(demo_irs, demo_source):
    for result in demo_irs.values():
        config = json.loads((result.path / "generation_config.json").read_text())
        stop_ids = config["eos_token_id"]
        stop_ids = stop_ids if isinstance(stop_ids, list) else [stop_ids]
        assert stop_ids == list(demo_source.stop_token_ids)
        assert read_manifest(result.path)["stop_token_ids"] == stop_ids


@pytest.mark.slow
def test_generate_ids_runs_past_the_end_of_turn_token(demo_irs, demo_source):
    end_of_turn = demo_source.end_of_turn_token[1]
    with api.load_artifact(demo_irs["FP16"].path) as runner:
        assert end_of_turn in runner.stop_token_ids
        prompt = runner.tokenize(
            "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
        )
        generated = list(runner.generate_ids(prompt, max_new_tokens=24))
    assert len(generated) == 24
    # The short answer ends its turn early; generation went on regardless.
    assert end_of_turn in generated[:-1]


@pytest.mark.slow
def test_openvino_tokenizes_wikitext_like_the_source(demo_irs, demo_source):
    from phiquant.evaluate.reference import tokenize_text
    from tests.conftest import WIKITEXT

    text = WIKITEXT.read_text("utf-8")[:5000]
    with api.load_artifact(demo_irs["INT8_ASYM"].path) as runner:
        assert runner.tokenize(text) == tokenize_text(demo_source, text)


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["FP16", "INT8_ASYM", "INT4_SYM"])
def test_manifest_matches_the_files(quant, demo_irs, demo_source):
    folder = demo_irs[quant].path
    manifest = read_manifest(folder)
    assert check_files(folder, manifest) == []
    assert manifest["target"]["format"] == quant
    assert manifest["source"]["content_sha256"] == demo_source.content_hash
    assert {"openvino", "nncf", "optimum-intel"} <= set(manifest["versions"])
    # Every weight of the source is accounted for, whatever its stored type.
    assert manifest["parameter_count"] == sum(demo_source.dtype_histogram().values())


@pytest.fixture(scope="module")
def tiny_irs(tiny_phi, tmp_path_factory):
    """name -> (source, {format: QuantizeResult}) for tiny Phi-3/3.5/4-mini.

    Their real token roles: the chat turn ends at <|end|>, which is not the
    tokenizer's EOS. Fidelity to transformers is tested in test_phi_family.
    """
    models = {}
    for name in TINY_VARIANTS:
        source = tiny_phi(name)[0]
        targets = ["openvino:fp32"]
        if name == "Phi-4-mini-instruct":
            targets.append("openvino:int4")
        results = api.quantize(
            source.path, targets, out=tmp_path_factory.mktemp("tiny-ir"), prompt=None
        )
        models[name] = (source, {result.target.quant: result for result in results})
    return models


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY_VARIANTS)
def test_genai_stops_at_end_as_well_as_at_eos(name, tiny_irs):
    import openvino_genai

    source, built = tiny_irs[name]
    end, eos = source.token_id("<|end|>"), source.traits.eos_token_ids[0]
    assert end != eos
    pipeline = openvino_genai.LLMPipeline(str(built["FP32"].path), "CPU")
    assert {end, eos} <= set(pipeline.get_generation_config().stop_token_ids)
    assert read_manifest(built["FP32"].path)["stop_token_ids"] == [eos, end]


@pytest.mark.slow
def test_int4_keeps_the_cookbook_group_size_where_it_divides_the_rows(tiny_irs):
    result = tiny_irs["Phi-4-mini-instruct"][1]["INT4_SYM"]
    options = read_manifest(result.path)["options"]
    # The tiny model's rows are 256 and 512 wide: group 128 is kept as asked.
    assert (options["group_size"], options["requested_group_size"]) == (128, 128)
    assert not any("group size" in note for note in result.notes)
    stored = get_backend("openvino").describe(result.path).metadata
    assert stored["weight_compression"]["group_size"] == "128"
