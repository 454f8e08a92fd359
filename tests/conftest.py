"""Shared fixtures: real models and artifacts, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests never reach a model hub; hub code is exercised on a local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHI_CONFIGS = SHARED_DATA / "phi-configs"
WIKITEXT = SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"
# A prompt every demo GGUF answers briefly, ending its turn.
SHORT_ANSWER_PROMPT = "What is 2 + 2?"
WINDOW_TOKENS = 512


@pytest.fixture(scope="session")
def demo_source():
    from phiquant.sources import open_source

    return open_source("demo")


@pytest.fixture(scope="session")
def wikitext_window(demo_source) -> list[int]:
    """The first 512 tokens of WikiText-2 test, in the demo's tokenizer."""
    from phiquant.evaluate.reference import tokenize_text

    text = WIKITEXT.read_text("utf-8")[:20_000]
    return tokenize_text(demo_source, text)[:WINDOW_TOKENS]


@pytest.fixture(scope="session")
def reference_logits(demo_source, wikitext_window):
    from phiquant.evaluate.reference import TransformersReference

    return TransformersReference(demo_source).score(wikitext_window)


@pytest.fixture(scope="session")
def demo_ggufs(tmp_path_factory):
    """F32, F16, Q8_0 and Q4_K_M GGUFs of the demo, built through the public API."""
    from phiquant import quantize

    out = tmp_path_factory.mktemp("gguf")
    results = quantize(
        "demo",
        ["gguf:fp32", "gguf:fp16", "gguf:int8", "gguf:int4"],
        out=out,
        prompt=SHORT_ANSWER_PROMPT,
    )
    return {result.target.quant: result for result in results}


@pytest.fixture(scope="session")
def gguf_quality(demo_ggufs, wikitext_window, reference_logits):
    """quant -> Comparison against the reference, scored once per session."""
    from phiquant import load_artifact
    from phiquant.evaluate.metrics import compare

    scores = {}

    def quality(quant: str):
        if quant not in scores:
            with load_artifact(demo_ggufs[quant].path) as runner:
                logits = runner.score(wikitext_window)
            scores[quant] = compare(reference_logits, logits, wikitext_window)
        return scores[quant]

    return quality


# Tiny random-weight Phi variants (see tests/tiny_models.py), built on first use.
TINY_TOKENS = 320  # past the tiny sliding window (191) and longrope switch (256)


@pytest.fixture(scope="session")
def tiny_phi(tmp_path_factory):
    """name -> (source, WikiText token window, transformers' fp32 logits).

    Each variant is built and scored once per session; tests must not
    change its folder.
    """
    from phiquant.evaluate.reference import TransformersReference, tokenize_text
    from phiquant.sources import open_source
    from tests.tiny_models import build_tiny_model

    text = WIKITEXT.read_text("utf-8")[:5000]
    built = {}

    def get(name: str):
        if name not in built:
            folder = build_tiny_model(name, tmp_path_factory.mktemp(name))
            source = open_source(folder)
            tokens = tokenize_text(source, text)[:TINY_TOKENS]
            built[name] = (source, tokens, TransformersReference(source).score(tokens))
        return built[name]

    return get
