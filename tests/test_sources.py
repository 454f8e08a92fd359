import json
import shutil

import pytest

from phiquant.errors import SourceError
from phiquant.families import family_for_config
from phiquant.sources import open_source
from phiquant.sources.config import normalise_config, traits_from_config
from tests.helpers import real_config, write_sharded_copy


def transformers5_spelling(raw: dict) -> dict:
    """The config as transformers 5 saves it (rope_parameters), made by transformers."""
    from transformers import Phi3Config

    fields = {key: value for key, value in raw.items() if key != "auto_map"}
    return Phi3Config(**fields).to_dict()


@pytest.mark.parametrize(
    "name", ["Phi-3-mini-4k-instruct", "Phi-3.5-mini-instruct", "Phi-4-mini-instruct"]
)
def test_rope_parameters_and_rope_scaling_normalise_to_the_same_traits(name):
    legacy = traits_from_config(normalise_config(real_config(name)))
    modern_config = transformers5_spelling(real_config(name))
    assert "rope_parameters" in modern_config
    modern = traits_from_config(normalise_config(modern_config))

    assert modern.rope == legacy.rope
    assert modern.rope_theta == legacy.rope_theta
    assert modern.rotary_dim == legacy.rotary_dim
    assert (
        modern.original_max_position_embeddings
        == legacy.original_max_position_embeddings
    )


def test_normalised_config_uses_the_spelling_runtimes_read():
    config = normalise_config(
        transformers5_spelling(real_config("Phi-3.5-mini-instruct"))
    )
    assert "rope_parameters" not in config
    assert config["rope_theta"] == 10000.0
    assert config["rope_scaling"]["type"] == "longrope"
    assert config["rope_scaling"]["rope_type"] == "longrope"
    assert len(config["rope_scaling"]["long_factor"]) == 48
    assert config["original_max_position_embeddings"] == 4096


def test_su_is_read_as_longrope():
    raw = real_config("Phi-3.5-mini-instruct")
    raw["rope_scaling"]["type"] = "su"
    traits = traits_from_config(normalise_config(raw))
    assert traits.rope.kind == "longrope"
    assert traits.longrope_switch_tokens == 4096


def test_missing_original_context_is_stated_not_guessed():
    raw = real_config("Phi-3-mini-4k-instruct")
    del raw["original_max_position_embeddings"]
    assert normalise_config(raw)["original_max_position_embeddings"] == 4096


@pytest.mark.parametrize(
    ("name", "window", "rotary_dim", "tied", "kv_bytes"),
    [
        # Phi-3-mini has no GQA: 32 layers x 32 heads x 96 dims x K,V x 2 bytes.
        ("Phi-3-mini-4k-instruct", 2047, 96, False, 384 * 1024),
        ("Phi-3.5-mini-instruct", 262144, 96, False, 384 * 1024),
        # Phi-4-mini: 8 KV heads of 128 dims, 96 of them rotated, tied head.
        ("Phi-4-mini-instruct", 262144, 96, True, 128 * 1024),
    ],
)
def test_traits_of_the_published_phi_configs(name, window, rotary_dim, tied, kv_bytes):
    traits = traits_from_config(normalise_config(real_config(name)))
    assert traits.sliding_window == window
    assert traits.rotary_dim == rotary_dim
    assert traits.tie_word_embeddings is tied
    assert traits.kv_cache_bytes_per_token(2) == kv_bytes


def _folder_with_config(tmp_path, config):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_phi2_config_reads_as_the_layernorm_family_with_partial_rotary():
    config = real_config("phi-2")
    family = family_for_config(config)
    traits = traits_from_config(normalise_config(config))
    assert (family.name, family.norm, family.gguf_arch) == ("phi", "layer", "phi2")
    assert traits.rotary_dim == 32  # 40% of 80
    assert traits.tie_word_embeddings is False
    assert traits.rope.kind == "default" and traits.sliding_window is None


def test_unsupported_relative_names_what_is_supported(tmp_path):
    config = real_config("Phi-3-mini-4k-instruct") | {
        "architectures": ["PhiMoEForCausalLM"]
    }
    folder = _folder_with_config(tmp_path, config)
    with pytest.raises(
        SourceError,
        match="Phi-3.5-MoE .* Supported architectures: "
        "Phi3ForCausalLM, PhiForCausalLM, LlamaForCausalLM",
    ):
        open_source(folder)


def test_unknown_architecture_is_refused(tmp_path):
    folder = _folder_with_config(tmp_path, {"architectures": ["GPTNeoXForCausalLM"]})
    with pytest.raises(SourceError, match="unknown architecture GPTNeoXForCausalLM"):
        open_source(folder)


def test_pickle_only_checkpoint_is_refused(tmp_path, demo_source):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(demo_source.path / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(SourceError, match="--allow-pickle"):
        open_source(folder)


def test_demo_is_a_phi3_checkpoint_with_chat_stop_token(demo_source):
    assert demo_source.family.name == "phi3"
    assert demo_source.end_of_turn_token == ("<|im_end|>", 2)
    assert demo_source.stop_token_ids == (2,)


def test_sharded_checkpoint_yields_the_same_tensors(tmp_path, demo_source):
    write_sharded_copy(demo_source.path, tmp_path / "sharded")
    sharded = open_source(tmp_path / "sharded")

    assert len(sharded.weight_files) == 2
    assert sorted(sharded.tensor_names()) == sorted(demo_source.tensor_names())
    single = dict(demo_source.tensors())
    for name, tensor in sharded.tensors():
        assert tensor.equal(single[name]), name


def test_sharded_checkpoint_with_a_missing_shard_is_refused(tmp_path, demo_source):
    shards = write_sharded_copy(demo_source.path, tmp_path / "sharded")
    (tmp_path / "sharded" / shards[1]).unlink()
    with pytest.raises(SourceError, match=f"lacks 1 shard.*{shards[1]}"):
        open_source(tmp_path / "sharded")
