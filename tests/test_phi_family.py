"""The Phi family's traps, on tiny models built from the real configs.

Full-precision artifacts must reproduce transformers on a sequence that
crosses the sliding window or the longrope switch, keep the chat template
and stop at the chat's end-of-turn token.
"""

from __future__ import annotations

import numpy as np
import pytest

from phiquant import api
from phiquant.artifacts import read_manifest
from phiquant.backends.gguf import find_gguf_file
from phiquant.backends.gguf.reader import open_reader
from phiquant.evaluate.metrics import per_position_kld
from phiquant.evaluate.reference import TransformersReference, tokenize_text
from phiquant.sources import open_source
from tests.conftest import WIKITEXT
from tests.tiny_models import LONGROPE_SWITCH, SLIDING_WINDOW, build_tiny_model

pytestmark = pytest.mark.slow
VARIANTS = ["Phi-3-mini-4k-instruct", "Phi-3.5-mini-instruct", "Phi-4-mini-instruct"]
SEQUENCE_TOKENS = 320  # past both the tiny window (191) and switch (256)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (source, token window, reference logits)."""
    models = {}
    text = WIKITEXT.read_text("utf-8")[:5000]
    for name in VARIANTS:
        folder = build_tiny_model(name, tmp_path_factory.mktemp(name))
        source = open_source(folder)
        tokens = tokenize_text(source, text)[:SEQUENCE_TOKENS]
        models[name] = (source, tokens, TransformersReference(source).score(tokens))
    return models


@pytest.fixture(scope="module")
def tiny_ggufs(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-gguf")
    return {
        name: api.quantize(
            source.path, ["gguf:fp32", "gguf:int4"], out=out / name, prompt=None
        )
        for name, (source, _, _) in tiny.items()
    }


def _kld(tiny, tiny_ggufs, name):
    _, tokens, reference = tiny[name]
    with api.load_artifact(tiny_ggufs[name][0].path, context_tokens=512) as runner:
        logits = runner.score(tokens)
    return per_position_kld(reference, logits), reference, logits


@pytest.mark.parametrize("name", ["Phi-3.5-mini-instruct", "Phi-4-mini-instruct"])
def test_longrope_gguf_matches_across_the_switch(name, tiny, tiny_ggufs):
    kld, reference, logits = _kld(tiny, tiny_ggufs, name)
    assert kld[LONGROPE_SWITCH:].mean() < 1e-3
    assert kld.mean() < 1e-3
    assert (reference.argmax(-1) == logits.argmax(-1)).mean() >= 0.99


def test_sliding_window_gguf_matches_only_inside_the_window(tiny, tiny_ggufs):
    kld, _, _ = _kld(tiny, tiny_ggufs, "Phi-3-mini-4k-instruct")
    assert kld[:SLIDING_WINDOW].mean() < 1e-3
    # llama.cpp disables Phi-3's sliding window; the manifest says so.
    assert kld[SLIDING_WINDOW:].mean() > 1e-2
    notes = tiny_ggufs["Phi-3-mini-4k-instruct"][0].notes
    assert any("ignores Phi-3's 191-token sliding window" in note for note in notes)


@pytest.mark.parametrize("name", VARIANTS)
def test_gguf_keeps_chat_template_and_ends_turns_at_end(name, tiny, tiny_ggufs):
    source = tiny[name][0]
    reader = open_reader(find_gguf_file(tiny_ggufs[name][0].path))
    end_id = source.token_id("<|end|>")
    assert reader.fields["tokenizer.chat_template"].contents() == source.chat_template
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == end_id
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == end_id


def test_partial_rotary_is_written_for_phi4_mini(tiny_ggufs):
    reader = open_reader(find_gguf_file(tiny_ggufs["Phi-4-mini-instruct"][0].path))
    assert reader.fields["phi3.rope.dimension_count"].contents() == 24  # 0.75 x 32
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names  # tied head
    assert {"rope_factors_long.weight", "rope_factors_short.weight"} <= names


def test_int4_keeps_a_tied_embedding_at_8_bits(tiny_ggufs):
    result = tiny_ggufs["Phi-4-mini-instruct"][1]
    reader = open_reader(find_gguf_file(result.path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == "Q8_0"
    manifest = read_manifest(result.path)
    assert manifest["options"]["embedding_type"] == "Q8_0 (tied embedding and head)"


def test_inspect_shows_the_traps_before_converting(tiny):
    report = api.inspect(tiny["Phi-4-mini-instruct"][0].path)
    traits = report["traits"]
    assert traits["rope_kind"] == "longrope"
    assert traits["longrope_switch_tokens"] == LONGROPE_SWITCH
    assert traits["rotary_dim"] == 24
    assert traits["tied_embeddings"] is True
    assert report["end_of_turn_token"] == "<|end|>"
    window = api.inspect(tiny["Phi-3-mini-4k-instruct"][0].path)["traits"]
    assert window["sliding_window"] == SLIDING_WINDOW
    assert np.isclose(window["kv_cache_bytes_per_token_fp16"], 2 * 4 * 32 * 2 * 2)
