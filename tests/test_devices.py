"""Device profiles, the memory model and `phiquant recommend`."""

import pytest

from phiquant import api
from phiquant.devices import PROFILES, parse_size
from phiquant.devices.memory import estimate_memory, kv_cache_bytes
from phiquant.errors import UsageError
from phiquant.evaluate.results import ArtifactEvaluation, Evaluation
from phiquant.sources.config import normalise_config, traits_from_config
from tests.helpers import phiquant_cli, real_config

KIB, GIB = 1024, 1024**3


@pytest.mark.parametrize(
    ("name", "per_token"),
    [
        # 32 layers x 32 KV heads x 96 dims x (K, V) x 2 bytes: no GQA.
        ("Phi-3-mini-4k-instruct", 384 * KIB),
        ("Phi-3.5-mini-instruct", 384 * KIB),
        # 32 layers x 8 KV heads x 128 dims x 2 x 2 bytes.
        ("Phi-4-mini-instruct", 128 * KIB),
        # 32 layers x 32 heads x 80 dims x 2 x 2 bytes.
        ("phi-2", 320 * KIB),
    ],
)
def test_kv_cache_per_token_of_the_shipped_phi_configs(name, per_token):
    traits = traits_from_config(normalise_config(real_config(name)))
    assert traits.kv_cache_bytes_per_token(2) == per_token


def test_phi3_mini_needs_one_and_a_half_gib_of_kv_cache_at_4k():
    traits = traits_from_config(normalise_config(real_config("Phi-3-mini-4k-instruct")))
    per_token = traits.kv_cache_bytes_per_token(2)
    assert kv_cache_bytes(per_token, 4096) == 1.5 * GIB
    estimate = estimate_memory(2_200_000_000, per_token, "gguf", 4096)
    assert estimate.total_bytes == 2_200_000_000 + 1.5 * GIB + estimate.overhead_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GB", 4_000_000_000),
        ("512MB", 512_000_000),
        ("3.5GiB", int(3.5 * GIB)),
        ("1000", 1000),
    ],
)
def test_sizes_are_read_as_users_write_them(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["four GB", "3 parsecs", "nanGB", "infGB"])
def test_unreadable_sizes_are_refused(text):
    with pytest.raises(UsageError, match="cannot read the size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["0", "0GB", "-1GB"])
def test_sizes_that_are_not_positive_are_refused(text):
    with pytest.raises(UsageError, match="is not positive"):
        parse_size(text)


def test_every_profile_names_valid_target_strings():
    from phiquant.targets import TargetSpec

    for profile in PROFILES.values():
        assert profile.targets and profile.memory_bytes > 0
        for text in profile.targets:
            TargetSpec.parse(text)


def test_device_profile_expands_to_its_buildable_targets():
    from phiquant.api import _resolve_targets
    from phiquant.backends import REGISTRY

    names = [t.name for t in _resolve_targets(None, "phone")]
    assert "gguf:Q4_K_M" in names and "gguf:Q4_0" in names
    expected = [t for t in PROFILES["phone"].targets if t.split(":")[0] in REGISTRY]
    assert len(names) == len(expected)


def test_unknown_device_lists_the_profiles():
    with pytest.raises(UsageError, match="Choose one of: phone, iot"):
        api.recommend("toaster")


def _store_results(folder, demo_ggufs, kld):
    """An evaluation stored beside real artifacts, with chosen quality figures."""
    artifacts = []
    for quant, kld_mean in kld.items():
        result = demo_ggufs[quant]
        (folder / result.path.name).symlink_to(result.path)
        artifacts.append(
            ArtifactEvaluation(
                name=result.target.name,
                path=str(folder / result.path.name),
                backend="gguf",
                format=quant,
                precision=result.target.precision,
                size_bytes=result.info.size_bytes,
                parameter_count=result.info.parameter_count,
                bits_per_weight=result.info.bits_per_weight,
                quality={"kld_mean": kld_mean, "delta_perplexity": 10 * kld_mean},
                speed={
                    "peak_rss_bytes": result.info.size_bytes + 120_000_000,
                    "prompt_tokens": 512,
                    "decode_tokens": 128,
                },
            )
        )
    Evaluation(reference={}, settings={}, artifacts=artifacts).save(
        folder / "results.json"
    )


@pytest.fixture
def evaluated_folder(tmp_path, demo_ggufs):
    _store_results(tmp_path, demo_ggufs, {"F16": 3e-6, "Q8_0": 4e-3, "Q4_K_M": 0.05})
    return tmp_path


@pytest.mark.slow
def test_phone_gets_the_smallest_int4_that_fits_and_is_accurate(evaluated_folder):
    result = api.recommend("phone", evaluated_folder)
    assert result.chosen.name == "gguf:Q4_K_M"
    reasons = result.explain()
    assert any("fits: needs" in line for line in reasons)
    assert any("mean KLD 0.05 <= 0.1" in line for line in reasons)
    assert any("gguf:F16: not a phone format" in line for line in reasons)


@pytest.mark.slow
def test_nothing_fits_a_tiny_memory_budget(evaluated_folder):
    result = api.recommend("phone", evaluated_folder, ram="200MB")
    assert result.chosen is None
    q4 = next(c for c in result.candidates if c.name == "gguf:Q4_K_M")
    assert any(reason.startswith("does not fit") for reason in q4.rejected_because)


@pytest.mark.slow
def test_quality_budget_rejects_the_inaccurate_artifact(evaluated_folder):
    result = api.recommend("phone", evaluated_folder, max_kld=0.01)
    assert result.chosen is None
    q4 = next(c for c in result.candidates if c.name == "gguf:Q4_K_M")
    assert q4.rejected_because == ["quality budget not met: mean KLD 0.05 > 0.01"]


@pytest.mark.slow
def test_server_gets_int8_when_int4_is_off_its_list(evaluated_folder):
    result = api.recommend("cpu-server", evaluated_folder)
    assert result.chosen.name == "gguf:Q8_0"
    assert "Also qualify, but larger: gguf:F16" in result.explain()


@pytest.mark.slow
def test_longer_context_needs_more_kv_cache(evaluated_folder):
    short = api.recommend("phone", evaluated_folder, context_tokens=1000).chosen
    long = api.recommend("phone", evaluated_folder, context_tokens=8000).chosen
    # The demo keeps 23,040 bytes of KV cache per token (30 x 3 x 64 x 2 x 2).
    assert long.need_bytes - short.need_bytes == 7000 * 23_040


@pytest.mark.slow
def test_recommend_without_evaluation_judges_memory_alone(tmp_path, demo_ggufs):
    (tmp_path / "q4").symlink_to(demo_ggufs["Q4_K_M"].path)
    result = phiquant_cli("recommend", "--device", "phone", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Recommended: gguf:Q4_K_M" in result.stdout
    assert "not evaluated" in result.stdout


@pytest.mark.slow
def test_a_non_finite_kld_is_never_within_the_quality_budget(tmp_path, demo_ggufs):
    _store_results(tmp_path, demo_ggufs, {"Q4_K_M": float("nan")})
    result = api.recommend("phone", tmp_path)
    assert result.chosen is None
    (q4,) = result.candidates
    assert q4.rejected_because[0].startswith("quality unknown: its evaluation gave")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"context_tokens": 0}, "--context must be at least 1 token"),
        ({"ram": -5}, "--ram must be a positive size"),
        ({"max_kld": -0.1}, "--max-kld must be a KL divergence of 0 or more"),
    ],
)
def test_impossible_budgets_are_refused(evaluated_folder, settings, message):
    with pytest.raises(UsageError, match=message):
        api.recommend("phone", evaluated_folder, **settings)
