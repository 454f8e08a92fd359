"""MLX artifacts of the demo and of tiny Phi variants, built by mlx-lm, run in MLX.

MLX's Linux CPU build multiplies with a reference BLAS, so forward passes
here are short: the first 128 tokens of the WikiText window, and quantized
artifacts with float32 scales (bfloat16 scales run about 10x slower there).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest

from phiquant import api
from phiquant.artifacts import check_files, read_manifest
from phiquant.backends import get_backend, resolve_target
from phiquant.backends.mlx.config import runtime_config
from phiquant.backends.mlx.options import resolve_options
from phiquant.errors import ArtifactError, UsageError
from phiquant.sources.config import normalise_config
from tests.conftest import SHORT_ANSWER_PROMPT, WIKITEXT
from tests.helpers import real_config

SCORED_TOKENS = 128
# The demo's 4-bit copy rambles on arithmetic and on most greetings; it
# answers this one in kind and ends its turn.
GREETING = "Hello!"
IM_END = 2  # the demo's end-of-turn token <|im_end|>
FAST_SCALES = {"dtype": "float32"}


@pytest.fixture(scope="module")
def mlx_artifacts(tmp_path_factory):
    """bf16, fp16 (defaults) and int8, int4 (float32 scales) of the demo."""
    out = tmp_path_factory.mktemp("mlx")
    floats = api.quantize(
        "demo", ["mlx:bf16", "mlx:fp16"], out=out, prompt=SHORT_ANSWER_PROMPT
    )
    quantized = api.quantize(
        "demo",
        ["mlx:int8", "mlx:int4"],
        out=out,
        prompt=GREETING,
        max_tokens=48,
        options={"mlx": FAST_SCALES},
    )
    return {result.target.quant: result for result in floats + quantized}


@pytest.fixture(scope="module")
def mlx_quality(mlx_artifacts, wikitext_window, reference_logits):
    from phiquant.evaluate.metrics import compare

    # Causal attention: the reference's first rows are those of the prefix alone.
    tokens = wikitext_window[:SCORED_TOKENS]
    scores = {}

    def quality(quant: str):
        if quant not in scores:
            with api.load_artifact(mlx_artifacts[quant].path) as runner:
                logits = runner.score(tokens)
            scores[quant] = compare(reference_logits[:SCORED_TOKENS], logits, tokens)
        return scores[quant]

    return quality


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["bf16", "fp16"])
def test_half_precision_mlx_matches_the_reference(quant, mlx_quality):
    # MLX computes in the weights' type: bf16 activations and logits put bf16
    # near this bound (rounding the reference's own logits to bf16 costs 2e-4).
    result = mlx_quality(quant)
    assert result.kld_mean < 1e-3
    assert result.top1_agreement >= 0.95


@pytest.mark.slow
def test_int8_mlx_stays_close_to_the_reference(mlx_quality):
    assert mlx_quality("int8").kld_mean < 1e-2


@pytest.mark.slow
def test_int4_mlx_is_further_from_the_reference_than_int8(mlx_quality):
    int4 = mlx_quality("int4")
    assert mlx_quality("int8").kld_mean < int4.kld_mean < 1.0
    assert int4.top1_agreement > 0.5
    assert np.isfinite(int4.perplexity)


@pytest.mark.slow
def test_every_mlx_build_answered_and_ended_its_turn(mlx_artifacts):
    for quant, result in mlx_artifacts.items():
        smoke = read_manifest(result.path)["smoke_test"]
        assert smoke["finish_reason"] == "stop", (quant, smoke)
        assert smoke["answer"].strip(), quant
    assert "4" in mlx_artifacts["fp16"].answer.text


@pytest.mark.slow
def test_int4_mlx_stops_at_the_end_of_turn_token(mlx_artifacts):
    stream = api.run(mlx_artifacts["int4"].path, GREETING, max_tokens=48)
    text = "".join(stream)
    assert stream.result.finish_reason == "stop"
    assert 0 < stream.result.n_tokens < 48
    assert text.strip()


@pytest.mark.slow
def test_folder_opens_unchanged_in_mlx_lm_and_stops_at_im_end(mlx_artifacts):
    import mlx.core as mx
    from mlx_lm import load

    folder = mlx_artifacts["int4"].path
    model, tokenizer = load(str(folder))
    assert IM_END in tokenizer.eos_token_ids

    # Plain mlx-lm computes what phiquant's runner reports.
    tokens = list(range(100, 116))
    plain = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
    with api.load_artifact(folder) as runner:
        assert np.allclose(runner.score(tokens), plain, atol=1e-4)


@pytest.mark.slow
def test_generate_ids_decodes_past_the_end_of_turn_token(mlx_artifacts):
    from mlx_lm.utils import load_tokenizer

    folder = mlx_artifacts["int8"].path
    with api.load_artifact(folder) as runner:
        reply = runner.chat([{"role": "user", "content": GREETING}], 48).collect()
        prompt = load_tokenizer(folder).apply_chat_template(
            [{"role": "user", "content": GREETING}], add_generation_prompt=True
        )
        ids = list(runner.generate_ids(prompt, reply.n_tokens + 4))

    # The same greedy path as chat, then on past <|im_end|> instead of stopping.
    assert ids[reply.n_tokens] == IM_END
    assert len(ids) == reply.n_tokens + 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("quant", "dtype", "stored"),
    [("bf16", "bfloat16", "bf16"), ("fp16", "float16", "fp16")],
)
def test_config_and_manifest_state_the_real_dtype(quant, dtype, stored, mlx_artifacts):
    folder = mlx_artifacts[quant].path
    config = json.loads((folder / "config.json").read_text())
    assert config["torch_dtype"] == dtype
    info = mlx_artifacts[quant].info
    assert info.tensor_types == {stored: info.parameter_count}
    assert read_manifest(folder)["options"]["dtype"] == dtype


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["bf16", "fp16", "int8", "int4"])
def test_manifest_matches_the_files(quant, mlx_artifacts, demo_source):
    folder = mlx_artifacts[quant].path
    manifest = read_manifest(folder)
    assert check_files(folder, manifest) == []
    assert manifest["target"]["name"] == f"mlx:{quant}"
    assert manifest["source"]["content_sha256"] == demo_source.content_hash
    assert manifest["stop_token_ids"] == [IM_END]
    assert manifest["versions"]["mlx-lm"] == "0.31.3"


@pytest.mark.slow
def test_quantized_manifest_records_bits_group_size_and_scale_type(mlx_artifacts):
    options = read_manifest(mlx_artifacts["int4"].path)["options"]
    assert {k: options[k] for k in ("bits", "group_size", "dtype", "mode")} == {
        "bits": 4,
        "group_size": 64,
        "dtype": "float32",
        "mode": "affine",
    }
    # Every matrix of the demo (576 and 1536 wide) splits into groups of 64;
    # only the norms stay float. The demo's embedding is tied (it is also the
    # output head), so it keeps 8 bits.
    types = mlx_artifacts["int4"].info.tensor_types
    assert set(types) == {"int4/g64", "int8/g64", "fp32"}
    assert types["int8/g64"] == 49152 * 576  # the embedding
    assert types["fp32"] < 0.001 * types["int4/g64"]
    assert options["embedding_bits"] == 8
    config = json.loads((mlx_artifacts["int4"].path / "config.json").read_text())
    assert config["quantization"] == {
        "group_size": 64,
        "bits": 4,
        "mode": "affine",
        "model.embed_tokens": {"group_size": 64, "bits": 8},
    }


@pytest.mark.slow
def test_mixed_recipe_and_group_size_land_in_the_folder(tmp_path):
    (result,) = api.quantize(
        "demo",
        ["mlx:mixed_4_6"],
        out=tmp_path,
        prompt=None,
        options={"mlx": {"group_size": "32", **FAST_SCALES}},
    )
    types = result.info.tensor_types
    assert {"int4/g32", "int6/g32"} <= set(types)
    assert types["int4/g32"] > types["int6/g32"]
    options = read_manifest(result.path)["options"]
    assert (options["recipe"], options["group_size"]) == ("mixed_4_6", 32)
    assert any("int6/g32" in note for note in result.notes)
    config = json.loads((result.path / "config.json").read_text())
    assert config["quantization"]["model.layers.0.mlp.down_proj"]["bits"] == 6


@pytest.mark.slow
def test_broken_weights_are_reported_as_a_failed_artifact(mlx_artifacts, tmp_path):
    import mlx.core as mx

    def broken_copy(name, value):
        folder = tmp_path / name
        shutil.copytree(mlx_artifacts["int4"].path, folder)
        weights = mx.load(str(folder / "model.safetensors"))
        norm = weights["model.norm.weight"]
        weights["model.norm.weight"] = mx.full(norm.shape, value, norm.dtype)
        mx.save_safetensors(str(folder / "model.safetensors"), weights)
        return folder

    tokens = list(range(100, 140))
    with api.load_artifact(broken_copy("nan", float("nan"))) as runner:
        with pytest.raises(ArtifactError, match="NaN or infinite logits at 40 of 40"):
            runner.score(tokens)
    # A zero final norm makes every logit equal: one token predicted everywhere.
    with api.load_artifact(broken_copy("flat", 0.0)) as runner:
        with pytest.raises(ArtifactError, match="predicts the same token"):
            runner.score(tokens)
        with pytest.raises(ArtifactError, match="one token repeated 16 times"):
            runner.chat([{"role": "user", "content": GREETING}], 16).collect()


@pytest.mark.slow
def test_a_bare_mlx_folder_is_recognised(mlx_artifacts, demo_source, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(mlx_artifacts["int8"].path, bare)
    (bare / "phiquant.json").unlink()
    assert api.artifact_backend(bare).name == "mlx"
    assert not get_backend("mlx").owns(demo_source.path)
    assert api.inspect(bare)["tensor_types"] == mlx_artifacts["int8"].info.tensor_types


# Tiny Phi variants: the runtime config, rope and stop tokens on real layouts.

TINY_TOKENS = 320  # past the tiny longrope switch (256) and sliding window (191)


@pytest.fixture(scope="module")
def tiny_mlx(tmp_path_factory):
    """name -> (source, tokens, reference logits, fp32 MLX build result)."""
    from phiquant.evaluate.reference import TransformersReference, tokenize_text
    from phiquant.sources import open_source
    from tests.tiny_models import build_tiny_model

    text = WIKITEXT.read_text("utf-8")[:5000]
    built = {}
    for name in ("Phi-3-mini-4k-instruct", "Phi-3.5-mini-instruct"):
        folder = build_tiny_model(name, tmp_path_factory.mktemp(name))
        if name == "Phi-3-mini-4k-instruct":
            # A checkpoint whose configs name only <|endoftext|> as EOS, as
            # Phi-3's config.json does: the artifact must still stop at <|end|>.
            config = json.loads((folder / "config.json").read_text())
            (folder / "generation_config.json").write_text(
                json.dumps({"eos_token_id": config["eos_token_id"]})
            )
        source = open_source(folder)
        tokens = tokenize_text(source, text)[:TINY_TOKENS]
        reference = TransformersReference(source).score(tokens)
        (result,) = api.quantize(
            folder,
            ["mlx:fp32"],
            out=tmp_path_factory.mktemp(f"{name}-mlx"),
            prompt=None,
        )
        built[name] = (source, tokens, reference, result)
    return built


def _tiny_kld(tiny_mlx, name, length=TINY_TOKENS):
    """Per-position KLD of the fp32 MLX build against transformers on a prefix."""
    from phiquant.evaluate.metrics import per_position_kld
    from phiquant.evaluate.reference import TransformersReference

    source, tokens, reference, result = tiny_mlx[name]
    if length != TINY_TOKENS:  # a shorter sequence: transformers may rope it otherwise
        tokens = tokens[:length]
        reference = TransformersReference(source).score(tokens)
    with api.load_artifact(result.path) as runner:
        return per_position_kld(reference, runner.score(tokens))


@pytest.mark.slow
def test_longrope_mlx_matches_past_the_switch(tiny_mlx):
    source, _, _, result = tiny_mlx["Phi-3.5-mini-instruct"]
    assert _tiny_kld(tiny_mlx, "Phi-3.5-mini-instruct").mean() < 1e-3
    config = json.loads((result.path / "config.json").read_text())
    assert "rope_parameters" not in config
    assert config["rope_scaling"]["type"] == "longrope"
    assert config["rope_theta"] == source.traits.rope_theta


@pytest.mark.slow
def test_longrope_mlx_uses_long_factors_below_the_switch_as_noted(tiny_mlx):
    from tests.tiny_models import LONGROPE_SWITCH

    name = "Phi-3.5-mini-instruct"
    assert _tiny_kld(tiny_mlx, name, length=128).mean() > 1e-2
    notes = tiny_mlx[name][3].notes
    assert any(f"below {LONGROPE_SWITCH} tokens" in note for note in notes)


@pytest.mark.slow
def test_sliding_window_mlx_matches_only_inside_the_window(tiny_mlx):
    from tests.tiny_models import SLIDING_WINDOW

    kld = _tiny_kld(tiny_mlx, "Phi-3-mini-4k-instruct")
    assert kld[:SLIDING_WINDOW].mean() < 1e-3
    assert kld[SLIDING_WINDOW:].mean() > 1e-2
    notes = tiny_mlx["Phi-3-mini-4k-instruct"][3].notes
    assert any("ignores the sliding window (191" in note for note in notes)


@pytest.mark.slow
def test_long_windows_are_scored_in_chunks_through_the_cache(tiny_mlx, monkeypatch):
    from phiquant.backends.mlx import runner as mlx_runner

    _, tokens, _, result = tiny_mlx["Phi-3.5-mini-instruct"]
    with api.load_artifact(result.path) as runner:
        whole = runner.score(tokens)
        monkeypatch.setattr(mlx_runner, "SCORE_CHUNK_TOKENS", 100)
        chunked = runner.score(tokens)
    assert chunked.shape == whole.shape == (TINY_TOKENS, whole.shape[1])
    assert np.allclose(chunked, whole, atol=1e-4)


@pytest.mark.slow
def test_phi3_artifact_stops_at_end_although_its_configs_say_endoftext(tiny_mlx):
    from mlx_lm import load

    source, _, _, result = tiny_mlx["Phi-3-mini-4k-instruct"]
    end = source.token_id("<|end|>")
    endoftext = source.token_id("<|endoftext|>")
    assert source.generation_config["eos_token_id"] == endoftext
    _, tokenizer = load(str(result.path))
    assert {end, endoftext} <= tokenizer.eos_token_ids
    assert tokenizer.chat_template == source.chat_template
    assert read_manifest(result.path)["stop_token_ids"] == [endoftext, end]


# Quick checks: options, runtime config and the registry, without building.


def _tiny_phi_config(name: str, transformers5: bool) -> dict:
    """A shrunk real config, optionally in transformers 5's rope_parameters spelling."""
    config = real_config(name)
    config.update(hidden_size=64, num_attention_heads=2, num_key_value_heads=2)
    config.update(num_hidden_layers=1, intermediate_size=128, vocab_size=256)
    scaling = config.get("rope_scaling")
    if scaling:
        pairs = int(32 * config.get("partial_rotary_factor", 1.0)) // 2
        for key in ("short_factor", "long_factor"):
            scaling[key] = scaling[key][:pairs]
    if transformers5:
        config["rope_parameters"] = {
            "rope_theta": config.pop("rope_theta"),
            "rope_type": (scaling or {}).get("type", "default"),
            **{
                k: v
                for k, v in (config.pop("rope_scaling") or {}).items()
                if k != "type"
            },
        }
    return config


@pytest.mark.parametrize("name", ["Phi-3.5-mini-instruct", "Phi-4-mini-instruct"])
def test_runtime_config_gives_mlx_lm_the_longrope_of_a_transformers5_config(name):
    pytest.importorskip("mlx_lm")
    from mlx_lm.models.rope_utils import SuScaledRoPE
    from mlx_lm.utils import _get_classes

    raw = _tiny_phi_config(name, transformers5=True)
    # What mlx-lm writes back is what it read: here the transformers 5 spelling.
    config = runtime_config(
        raw, normalise_config(raw), float_dtype="float16", stop_token_ids=[7, 9]
    )
    model_class, args_class = _get_classes(config)
    rope = model_class(args_class.from_dict(config)).layers[0].self_attn.rope

    expected = _tiny_phi_config(name, transformers5=False)
    assert isinstance(rope, SuScaledRoPE)
    assert rope.dim == int(32 * expected.get("partial_rotary_factor", 1.0))
    freqs = expected["rope_theta"] ** (np.arange(0, rope.dim, 2) / rope.dim)
    long_factor = np.array(expected["rope_scaling"]["long_factor"])
    assert np.allclose(np.array(rope._freqs), long_factor * freqs, rtol=1e-5)
    assert (config["torch_dtype"], config["eos_token_id"]) == ("float16", [7, 9])


def test_runtime_config_keeps_theta_of_a_plain_rope_model():
    raw = _tiny_phi_config("Phi-3-mini-4k-instruct", transformers5=True)
    raw["rope_parameters"]["rope_theta"] = 250000.0
    config = runtime_config(
        raw, normalise_config(raw), float_dtype="bfloat16", stop_token_ids=[1]
    )
    assert "rope_parameters" not in config
    assert (config["rope_theta"], config["rope_scaling"]) == (250000.0, None)


def test_mlx_targets_and_their_folders():
    assert resolve_target("mlx:int4").slug == "mlx-int4"
    assert resolve_target("mlx:mixed_4_6").precision == "int4"
    assert resolve_target("mlx:BF16").name == "mlx:bf16"
    with pytest.raises(UsageError, match="mlx has no precision 'int7'"):
        resolve_target("mlx:int7")


@pytest.mark.parametrize(
    ("precision", "options", "message"),
    [
        ("int4", {"bits": 6}, "unknown mlx option(s): bits. MLX options are"),
        ("int4", {"group_size": 48}, "mlx option group_size=48 is not valid"),
        ("int4", {"group_size": "many"}, "mlx option group_size='many' is not valid"),
        ("int8", {"dtype": "float64"}, "mlx option dtype='float64' is not valid"),
        ("bf16", {"group_size": 32}, "mlx:bf16 takes no options (got group_size)"),
    ],
)
def test_options_that_would_not_work_are_refused_in_one_line(
    precision, options, message
):
    with pytest.raises(UsageError) as refused:
        resolve_options(precision, options, "bfloat16")
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_option_defaults_follow_mlx_lm_and_accept_command_line_text():
    default = resolve_options("int4", {}, "bfloat16")
    assert (default.bits, default.group_size, default.dtype) == (4, 64, "bfloat16")
    text = resolve_options(
        "mixed_3_6", {"group_size": "32", "dtype": "fp32"}, "float16"
    )
    assert (text.bits, text.group_size, text.dtype, text.recipe) == (
        3,
        32,
        "float32",
        "mixed_3_6",
    )
    assert resolve_options("fp16", {}, "bfloat16").dtype == "float16"


@pytest.mark.skipif(sys.platform == "darwin", reason="Apple silicon runs every target")
def test_half_precision_quantized_targets_are_not_test_run_on_a_linux_cpu():
    backend = get_backend("mlx")
    int4 = resolve_target("mlx:int4")
    if backend.missing_libraries():
        pytest.skip("mlx is not installed")
    import mlx.core as mx

    if mx.default_device() == mx.gpu:
        pytest.skip("an MLX GPU build runs every target")
    assert not backend.can_run(int4)
    assert backend.can_run(dataclasses.replace(int4, options=FAST_SCALES))
    assert backend.can_run(resolve_target("mlx:bf16"))
