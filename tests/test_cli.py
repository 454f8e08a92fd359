"""The command line as a user meets it: help, one-line errors, exit codes."""

import pytest

from tests.helpers import phiquant_cli


def test_help_lists_the_commands():
    result = phiquant_cli("--help")
    assert result.returncode == 0
    for command in ("quantize", "run", "inspect", "targets"):
        assert command in result.stdout


def test_quantize_help_teaches_targets_and_the_demo():
    result = phiquant_cli("quantize", "--help")
    assert result.returncode == 0
    assert "gguf:int4" in result.stdout
    assert "demo" in result.stdout


@pytest.mark.parametrize(
    ("command", "argument_help"),
    [
        ("quantize", "local Hugging Face folder, or a hub id"),
        ("eval", "a folder of artifacts"),
        ("run", "Artifact folder or .gguf file"),
        ("inspect", "A source (demo, folder, hub id) or an artifact"),
        ("report", "or the results.json file itself"),
        ("recommend", "Folder of artifacts"),
    ],
)
def test_help_explains_every_argument(command, argument_help):
    result = phiquant_cli(command, "--help", env={"COLUMNS": "250"})
    assert result.returncode == 0
    assert argument_help in result.stdout
    if command == "quantize":
        assert "BACKEND:PRECISION[@DEVICE]" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["quantize", "--to", "gguf"], 2, "phiquant: invalid target 'gguf'"),
        (
            ["quantize", "--to", "gguf:int3"],
            2,
            "phiquant: gguf has no precision 'int3'",
        ),
        (
            ["quantize", "./no/such/model"],
            3,
            "phiquant: no model folder at ./no/such/model",
        ),
        (["run", "/no/such/artifact", "-p", "hi"], 6, "phiquant: no artifact at"),
        (["eval", "/no/such/artifact"], 6, "phiquant: no artifact at"),
        (["eval", __file__], 6, f"phiquant: {__file__} is not a phiquant artifact"),
        (
            ["inspect", "./no/such/model"],
            3,
            "phiquant: no model folder or artifact at ./no/such/model",
        ),
    ],
)
def test_errors_are_one_line_with_a_distinct_exit_code(args, code, message):
    result = phiquant_cli(*args)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = phiquant_cli("--debug", "quantize", "--to", "gguf")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_inspect_reports_the_demo_traits():
    result = phiquant_cli("inspect", "demo", "--json")
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["architecture"] == "Phi3ForCausalLM"
    assert report["traits"]["kv_cache_bytes_per_token_fp16"] == 30 * 3 * 64 * 2 * 2
    assert report["end_of_turn_token"] == "<|im_end|>"
    assert report["tensor_types"] == {"BF16": report["parameter_count"]}
