import pytest

from phiquant.backends import resolve_target
from phiquant.errors import UsageError
from phiquant.targets import TargetSpec


@pytest.mark.parametrize(
    ("text", "quant", "precision"),
    [
        ("gguf:fp32", "F32", "fp32"),
        ("gguf:fp16", "F16", "fp16"),
        ("gguf:bf16", "BF16", "bf16"),
        ("gguf:int8", "Q8_0", "int8"),
        ("gguf:int4", "Q4_K_M", "int4"),
        ("gguf:Q5_K_M", "Q5_K_M", "int5"),
        ("gguf:q6_k", "Q6_K", "int6"),
        ("gguf:Q4_0", "Q4_0", "int4"),
    ],
)
def test_generic_and_gguf_precision_names_map_to_gguf_types(text, quant, precision):
    target = resolve_target(text)
    assert (target.backend, target.quant, target.precision) == (
        "gguf",
        quant,
        precision,
    )
    assert target.slug == f"gguf-{quant.lower()}"


@pytest.mark.parametrize(
    ("text", "name"),
    [("GGUF:INT4", "gguf:Q4_K_M"), ("Gguf:fp16", "gguf:F16"), ("ONNX:int4@CPU", None)],
)
def test_target_names_are_case_insensitive(text, name):
    spec = TargetSpec.parse(text)
    assert spec.backend == spec.backend.lower()
    assert spec.device in (None, "cpu")
    if name is not None:
        assert resolve_target(text).name == name


def test_target_string_carries_device():
    spec = TargetSpec.parse("onnx:int4@cuda")
    assert (spec.backend, spec.precision, spec.device) == ("onnx", "int4", "cuda")


@pytest.mark.parametrize("text", ["gguf", "gguf:", ":int4", "gguf int4", "gguf:int4@"])
def test_malformed_target_is_a_usage_error_with_an_example(text):
    with pytest.raises(UsageError, match="BACKEND:PRECISION"):
        TargetSpec.parse(text)


def test_unknown_precision_lists_the_choices():
    with pytest.raises(UsageError, match="Choose one of: fp32, fp16"):
        resolve_target("gguf:int3")


def test_gguf_takes_no_device():
    with pytest.raises(UsageError, match="no device 'cuda'"):
        resolve_target("gguf:int4@cuda")


def test_backends_not_yet_built_say_so(monkeypatch):
    from phiquant import backends

    monkeypatch.setitem(backends.PLANNED, "tflite", "LiteRT")
    with pytest.raises(UsageError, match="tflite backend .LiteRT. is not available"):
        resolve_target("tflite:int4")


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(UsageError, match="Available backends: gguf"):
        resolve_target("coreml:int8")


def test_options_are_read_per_backend():
    from phiquant.api import parse_options

    assert parse_options(["onnx.block_size=128", "onnx.head = int4"]) == {
        "onnx": {"block_size": "128", "head": "int4"}
    }
    with pytest.raises(UsageError, match="BACKEND.NAME=VALUE"):
        parse_options(["block_size=128"])


def test_options_for_a_backend_without_targets_are_refused():
    from phiquant.api import _resolve_targets

    with pytest.raises(UsageError, match="options given for onnx"):
        _resolve_targets(["gguf:int4"], None, {"onnx": {"block_size": "64"}})


def test_gguf_takes_no_options(demo_source):
    from phiquant.backends import get_backend
    from phiquant.targets import Target

    target = Target("gguf", "Q4_K_M", "int4", options={"group_size": "32"})
    with pytest.raises(UsageError, match="gguf backend takes no options"):
        get_backend("gguf").validate(demo_source, target)
