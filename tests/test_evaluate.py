"""One yardstick: metrics on known cases, then `phiquant eval` end to end."""

import json
import shutil

import numpy as np
import pytest

from phiquant import api
from phiquant.evaluate.metrics import per_position_kld, score_window, summarise
from phiquant.evaluate.pipeline import long_context_probe
from phiquant.evaluate.reference import summarise_logits
from phiquant.evaluate.results import Evaluation
from phiquant.sources.config import normalise_config, traits_from_config
from tests.helpers import phiquant_cli, real_config

FIRST = 256  # llama.cpp's method: score the second half of a 512-token window


def test_identical_logits_give_zero_kld_and_the_reference_perplexity(
    wikitext_window, reference_logits
):
    reference = summarise_logits(wikitext_window, reference_logits, FIRST)
    figures = summarise([score_window(reference, reference_logits)])
    assert figures["kld_mean"] < 1e-7
    assert figures["kld_max"] < 1e-6
    assert figures["top1_agreement"] == 1.0
    assert figures["perplexity"] == pytest.approx(figures["reference_perplexity"], 1e-6)
    assert figures["positions"] == len(wikitext_window) - 1 - FIRST


def test_damaged_logits_give_clearly_positive_kld(wikitext_window, reference_logits):
    rng = np.random.default_rng(0)
    damaged = reference_logits + rng.normal(0, 2.0, reference_logits.shape)
    reference = summarise_logits(wikitext_window, reference_logits, FIRST)
    figures = summarise([score_window(reference, damaged.astype(np.float32))])
    assert figures["kld_mean"] > 0.1
    assert figures["perplexity"] > figures["reference_perplexity"]


def test_top_k_kld_equals_exact_kld_when_k_covers_the_vocabulary():
    rng = np.random.default_rng(1)
    reference, test = rng.normal(0, 3, (2, 40, 50))
    tokens = rng.integers(0, 50, 41).tolist()
    summary = summarise_logits(tokens, reference, first=0, top_k=50)
    approx = score_window(summary, test).kld
    # Equal up to the float32 storage of the reference's log-probabilities.
    exact = per_position_kld(reference[:40], test[:40])
    np.testing.assert_allclose(approx, exact, rtol=1e-4)


def test_nan_logits_fail_instead_of_scoring(wikitext_window, reference_logits):
    reference = summarise_logits(wikitext_window, reference_logits, FIRST)
    broken = reference_logits.copy()
    broken[300, 5] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        score_window(reference, broken)


@pytest.mark.parametrize(
    ("name", "switch_at", "tokens"),
    [
        ("Phi-3-mini-4k-instruct", 2047, 2303),
        ("Phi-3.5-mini-instruct", 4096, 4352),
        ("Phi-4-mini-instruct", 4096, 4352),
    ],
)
def test_long_context_probe_crosses_window_or_longrope_switch(name, switch_at, tokens):
    probe = long_context_probe(traits_from_config(normalise_config(real_config(name))))
    assert (probe.switch_at, probe.tokens) == (switch_at, tokens)


def test_no_long_context_probe_for_plain_rope(demo_source):
    assert long_context_probe(demo_source.traits) is None


@pytest.mark.slow
def test_top_1024_kld_stays_close_to_exact_kld(
    demo_ggufs, wikitext_window, reference_logits
):
    with api.load_artifact(demo_ggufs["Q4_K_M"].path) as runner:
        logits = runner.score(wikitext_window)
    exact = per_position_kld(reference_logits[FIRST:-1], logits[FIRST:-1])
    reference = summarise_logits(wikitext_window, reference_logits, FIRST)
    approx = score_window(reference, logits).kld
    assert np.all(approx <= exact + 1e-9)
    assert approx.mean() > 0.9 * exact.mean()


@pytest.fixture(scope="module")
def evaluated(demo_ggufs, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    paths = [demo_ggufs[q].path for q in ("F16", "Q8_0", "Q4_K_M")]
    result = phiquant_cli(
        "eval",
        *map(str, paths),
        "--windows",
        "2",
        "--out",
        str(out),
        "--json",
        str(out / "copy.json"),
    )
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_eval_prints_the_table_and_writes_every_report(evaluated):
    out, result = evaluated
    assert "Quality against the reference" in result.stdout
    assert "Speed and memory" in result.stdout
    assert json.loads((out / "copy.json").read_text()) == json.loads(
        (out / "results.json").read_text()
    )
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "| gguf:Q8_0" in (out / "report.md").read_text()


@pytest.mark.slow
def test_eval_figures_are_sane(evaluated):
    out, _ = evaluated
    evaluation = Evaluation.load(out)
    scores = {a.format: a for a in evaluation.artifacts}
    assert scores["F16"].quality["kld_mean"] < 1e-3
    assert scores["F16"].quality["kld_mean"] < scores["Q8_0"].quality["kld_mean"]
    assert scores["Q8_0"].quality["kld_mean"] < scores["Q4_K_M"].quality["kld_mean"]
    assert scores["Q4_K_M"].size_bytes < scores["Q8_0"].size_bytes
    for artifact in evaluation.artifacts:
        assert artifact.error is None
        assert artifact.quality["positions"] == 2 * 255
        assert artifact.speed["decode_tokens"] == 128
        assert artifact.speed["decode_tokens_per_s"] > 0
        assert artifact.speed["peak_rss_bytes"] > artifact.size_bytes * 0.5


@pytest.mark.slow
def test_report_rebuilds_the_same_reports_from_stored_results(evaluated):
    out, _ = evaluated
    markdown = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "report.html").unlink()
    result = phiquant_cli("report", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "report.md").read_text() == markdown
    assert (out / "report.html").exists()


@pytest.mark.slow
def test_damaged_copy_of_the_model_scores_clearly_worse(demo_source, tmp_path):
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(demo_source.path, damaged)
    tensors = load_file(damaged / "model.safetensors")
    name = "model.layers.3.mlp.down_proj.weight"
    tensors[name] = tensors[name] * 3
    save_file(tensors, damaged / "model.safetensors", metadata={"format": "pt"})

    [built] = api.quantize(damaged, ["gguf:fp16"], out=tmp_path / "out", prompt=None)
    evaluation, _ = api.evaluate(
        [built.path], reference="demo", windows=1, speed=False, out=tmp_path / "out"
    )
    quality = evaluation.artifacts[0].quality
    assert quality["kld_mean"] > 0.01
    assert "another source" in evaluation.reference["notes"][0]


@pytest.mark.slow
def test_a_second_evaluation_into_a_folder_keeps_comparable_earlier_results(
    demo_ggufs, tmp_path
):
    folder = tmp_path / "artifacts"
    for quant in ("F16", "Q8_0"):
        shutil.copytree(demo_ggufs[quant].path, folder / demo_ggufs[quant].path.name)
    f16, q8 = (folder / demo_ggufs[q].path.name for q in ("F16", "Q8_0"))

    def evaluated_names(artifact, **settings):
        evaluation, _ = api.evaluate([artifact], speed=False, **settings)
        stored = Evaluation.load(folder)
        assert [a.name for a in stored.artifacts] == [
            a.name for a in evaluation.artifacts
        ]
        return [a.name for a in stored.artifacts], stored.reference["notes"]

    assert evaluated_names(f16, windows=1) == (["gguf:F16"], [])
    names, notes = evaluated_names(q8, windows=1)
    assert names == ["gguf:F16", "gguf:Q8_0"]
    assert "gguf:F16: scored earlier" in notes[0]
    # Re-scoring one replaces its row instead of adding a second.
    assert evaluated_names(q8, windows=1)[0] == ["gguf:F16", "gguf:Q8_0"]

    # A rebuilt artifact (its manifest changed) is no longer the one scored.
    manifest = f16 / "phiquant.json"
    manifest.write_text(manifest.read_text() + "\n")
    assert evaluated_names(q8, windows=1)[0] == ["gguf:Q8_0"]
    # Other windows are another yardstick: earlier figures do not mix in.
    assert evaluated_names(f16, windows=2)[0] == ["gguf:F16"]
