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


def test_backends_not_yet_built_say_so():
    with pytest.raises(UsageError, match="onnx backend .* not available"):
        resolve_target("onnx:int4")


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(UsageError, match="Available backends: gguf"):
        resolve_target("tflite:int8")
