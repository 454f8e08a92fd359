"""Bad input, interrupted runs and unsafe files: one line, non-zero exit, no
partial artifact, and the source byte-identical afterwards."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import phiquant_cli, write_sharded_copy

QUICK = ["--to", "gguf:fp16", "--no-test", "--no-eval"]


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


@pytest.fixture
def model(tmp_path, demo_source) -> Path:
    """A private copy of the demo checkpoint (weights hard-linked, never edited)."""
    folder = tmp_path / "model"
    shutil.copytree(demo_source.path, folder, copy_function=_link_or_copy)
    return folder


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def rewrite(path: Path, data: bytes) -> None:
    """Replace a file with new bytes without touching what it was linked to."""
    path.unlink()
    path.write_bytes(data)


def assert_refused(result, code: int, message: str, out: Path) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("phiquant: "), result.stderr
    assert message in lines[0]
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [], f"partial output left behind: {leftovers}"


def _drop_config(folder):
    (folder / "config.json").unlink()


def _malformed_config(folder):
    rewrite(folder / "config.json", b'{"architectures": ["Phi3ForCausalLM",')


def _config_missing_field(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["hidden_size"]
    rewrite(folder / "config.json", json.dumps(config).encode())


def _unknown_architecture(folder):
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MambaForCausalLM"]
    rewrite(folder / "config.json", json.dumps(config).encode())


def _truncated_weights(folder):
    data = (folder / "model.safetensors").read_bytes()
    rewrite(folder / "model.safetensors", data[: len(data) // 2])


def _corrupt_header(folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8:40] = b"\xff" * 32
    rewrite(folder / "model.safetensors", bytes(data))


def _drop_tokenizer(folder):
    (folder / "tokenizer.json").unlink()


def _shard_missing(folder):
    sharded = folder.parent / "sharded"
    shards = write_sharded_copy(folder, sharded)
    (sharded / shards[0]).unlink()
    shutil.rmtree(folder)
    sharded.rename(folder)


def _edit_config(**changes):
    def damage(folder):
        config = json.loads((folder / "config.json").read_text())
        rewrite(folder / "config.json", json.dumps(config | changes).encode())

    return damage


def _rewrite_json(name, data: bytes):
    def damage(folder):
        rewrite(folder / name, data)

    return damage


def _raising_chat_template(folder):
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["chat_template"] = "{{ raise_exception('no system role') }}"
    rewrite(folder / "tokenizer_config.json", json.dumps(settings).encode())
    (folder / "chat_template.jinja").unlink(missing_ok=True)


def _pickle_only(folder):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_drop_config, "has no config.json"),
        (_malformed_config, "config.json is malformed"),
        (_config_missing_field, "lacks a required field ('hidden_size')"),
        (_unknown_architecture, "unknown architecture MambaForCausalLM"),
        (_truncated_weights, "model.safetensors is truncated"),
        (_corrupt_header, "corrupt safetensors header"),
        (_drop_tokenizer, "has no tokenizer.json"),
        (_shard_missing, "lacks 1 shard(s): model-00001-of-00002.safetensors"),
        (_pickle_only, "pass --allow-pickle if you trust their origin"),
        (
            _edit_config(architectures="Phi3ForCausalLM"),
            "architectures is 'Phi3ForCausalLM', not a list",
        ),
        (_edit_config(hidden_size="576"), "hidden_size is '576', not a number"),
        (_edit_config(num_hidden_layers=31), "but the weights hold 30 layers"),
        (_edit_config(num_hidden_layers=-3), "num_hidden_layers = -3, not a posit"),
        (_edit_config(num_attention_heads=7), "not a multiple of its 3 key/value"),
        (_edit_config(partial_rotary_factor=2.5), "must lie in (0, 1]"),
        (
            _edit_config(intermediate_size=1000),
            "model.layers.0.mlp.gate_up_proj.weight is 3072 x 576 but config.json "
            "implies 2000 x 576",
        ),
        (
            _edit_config(vocab_size=1000),
            "model.embed_tokens.weight is 49152 x 576 but config.json implies",
        ),
        (
            _edit_config(rope_scaling={"type": "longrope"}),
            "longrope scaling needs 32 short_factor values",
        ),
        (_rewrite_json("tokenizer.json", b"{not json"), "tokenizer.json is malformed"),
        (_rewrite_json("tokenizer.json", b"{}"), "holds no tokenizer model"),
        (
            _rewrite_json("generation_config.json", b"[]"),
            "generation_config.json is malformed (a JSON list, not an object)",
        ),
        (_raising_chat_template, "chat template fails on a one-message chat"),
    ],
)
def test_bad_source_is_refused_in_one_line(model, tmp_path, damage, message):
    damage(model)
    before = fingerprint(model)
    out = tmp_path / "out"
    result = phiquant_cli("quantize", str(model), "--out", str(out), *QUICK)
    assert_refused(result, 3, message, out)
    assert fingerprint(model) == before


def test_invalid_target_is_refused_before_anything_is_read(model, tmp_path):
    before = fingerprint(model)
    out = tmp_path / "out"
    result = phiquant_cli("quantize", str(model), "--out", str(out), "--to", "gguf:q3")
    assert_refused(result, 2, "gguf has no precision 'q3'", out)
    assert fingerprint(model) == before


def test_existing_output_is_refused_and_kept(model, tmp_path):
    before = fingerprint(model)
    out = tmp_path / "out"
    (out / "gguf-f16").mkdir(parents=True)
    (out / "gguf-f16" / "mine.txt").write_text("keep me")
    result = phiquant_cli("quantize", str(model), "--out", str(out), *QUICK)
    assert result.returncode == 5
    assert "already exists. Pass --force" in result.stderr
    assert (out / "gguf-f16" / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["gguf-f16"]
    assert sorted(p.name for p in (out / "gguf-f16").iterdir()) == ["mine.txt"]
    assert fingerprint(model) == before


def test_output_inside_the_source_is_refused(model):
    before = fingerprint(model)
    result = phiquant_cli("quantize", str(model), "--out", str(model / "out"), *QUICK)
    assert result.returncode == 5
    assert "lies inside the source folder" in result.stderr
    assert fingerprint(model) == before


def test_the_same_run_twice_at_once_is_refused(model, tmp_path):
    before = fingerprint(model)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".gguf-f16.lock", "w") as first_run:
        fcntl.flock(first_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = phiquant_cli("quantize", str(model), "--out", str(out), *QUICK)
    assert result.returncode == 5
    assert "another phiquant run is writing" in result.stderr
    # Only the first run's lock file is there: no artifact, no staging folder.
    assert sorted(p.name for p in out.iterdir()) == [".gguf-f16.lock"]
    assert fingerprint(model) == before


def test_missing_backend_library_names_the_extra_to_install(model, tmp_path):
    before = fingerprint(model)
    hide = tmp_path / "hide"
    hide.mkdir()
    # An interpreter on which llama-cpp-python is not importable.
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['llama_cpp'] = None\n"
    )
    out = tmp_path / "out"
    result = phiquant_cli(
        "quantize", str(model), "--out", str(out), *QUICK, env={"PYTHONPATH": str(hide)}
    )
    assert_refused(result, 4, "pip install 'phiquant[gguf]'", out)
    assert fingerprint(model) == before


def test_hub_id_while_offline_says_how_to_pass_a_folder(tmp_path):
    out = tmp_path / "out"
    result = phiquant_cli(
        "quantize",
        "microsoft/Phi-3-mini-4k-instruct",
        "--out",
        str(out),
        *QUICK,
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")},
    )
    assert_refused(result, 3, "offline and not in the local hub cache", out)
    assert "phiquant quantize ./Phi-3-mini-4k-instruct" in result.stderr


@pytest.mark.parametrize("size", [1000, 100_000_000])
def test_truncated_or_corrupt_gguf_is_reported(tmp_path, demo_ggufs, size):
    original = next(demo_ggufs["Q8_0"].path.glob("*.gguf"))
    broken = tmp_path / "broken.gguf"
    with original.open("rb") as handle:
        broken.write_bytes(handle.read(size))
    for command in (["run", str(broken), "-p", "hi"], ["inspect", str(broken)]):
        result = phiquant_cli(*command)
        assert result.returncode == 6, result.stderr
        assert "is not a readable GGUF file" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_verify_finds_a_changed_file(tmp_path, demo_ggufs):
    copy = tmp_path / "artifact"
    shutil.copytree(demo_ggufs["Q4_K_M"].path, copy)
    assert phiquant_cli("verify", str(copy)).returncode == 0

    gguf = next(copy.glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0xFF
    gguf.write_bytes(bytes(data))
    result = phiquant_cli("verify", str(copy))
    assert result.returncode == 6
    assert f"does not match its manifest: content differs: {gguf.name}" in result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs: a real 'no space left on device' for a 270 MB artifact."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_disk_full_while_writing_leaves_nothing(model, small_disk):
    before = fingerprint(model)
    result = phiquant_cli("quantize", str(model), "--out", str(small_disk), *QUICK)
    assert_refused(result, 5, "no space left while writing", small_disk)
    assert fingerprint(model) == before


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_cleans_up(model, tmp_path, signum):
    out = tmp_path / "out"
    before = fingerprint(model)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phiquant",
            "quantize",
            str(model),
            "--out",
            str(out),
            "--to",
            "gguf:fp32",
            "--no-test",
            "--no-eval",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not any(out.glob(".gguf-f32.tmp-*/*.gguf")):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the build never started writing"
        time.sleep(0.05)
    process.send_signal(signum)
    process.wait(timeout=60)

    assert process.returncode != 0
    assert sorted(p.name for p in out.iterdir()) == []
    assert fingerprint(model) == before


@pytest.mark.slow
def test_pickle_checkpoint_converts_only_when_allowed(model, tmp_path):
    import torch
    from safetensors.torch import load_file

    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save(tensors, model / "pytorch_model.bin")
    before = fingerprint(model)

    out = tmp_path / "out"
    refused = phiquant_cli("quantize", str(model), "--out", str(out), *QUICK)
    assert refused.returncode == 3
    # The safetensors copy goes to phiquant's cache; keep this one private.
    allowed = phiquant_cli(
        "quantize",
        str(model),
        "--out",
        str(out),
        *QUICK,
        "--allow-pickle",
        env={"PHIQUANT_CACHE": str(tmp_path / "cache")},
    )
    assert allowed.returncode == 0, allowed.stderr
    manifest = json.loads((out / "gguf-f16" / "phiquant.json").read_text())
    assert manifest["source"]["path"] == str(model.resolve())
    assert fingerprint(model) == before


@pytest.mark.slow
def test_code_in_a_model_folder_never_runs(tiny_phi, tmp_path):
    """Real Phi-3 folders name their own Python modules (auto_map); none may run."""
    from phiquant import api
    from phiquant.evaluate.reference import TransformersReference
    from phiquant.sources import open_source

    source, tokens, _ = tiny_phi("Phi-3-mini-4k-instruct")
    folder = tmp_path / "with-code"
    shutil.copytree(source.path, folder)
    ran = tmp_path / "code-ran"
    for module in ("configuration_phi3", "modeling_phi3", "tokenization_phi3"):
        (folder / f"{module}.py").write_text(
            f"open({str(ran)!r}, 'a').write({module!r} + '\\n')\n"
        )
    for name, auto_map in (
        (
            "config.json",
            {
                "AutoConfig": "configuration_phi3.Phi3Config",
                "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM",
            },
        ),
        ("tokenizer_config.json", {"AutoTokenizer": ["tokenization_phi3.T", None]}),
    ):
        settings = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(settings | {"auto_map": auto_map}))
    before = fingerprint(folder)

    targets = ["gguf:fp32", "onnx:fp32", "openvino:fp32", "mlx:fp32"]
    results = api.quantize(folder, targets, out=tmp_path / "out", max_tokens=4)
    TransformersReference(open_source(folder)).score(tokens[:16])

    assert not ran.exists(), f"model-folder code ran: {ran.read_text().split()}"
    for result in results:
        assert result.answer is not None  # each runtime loaded it and chatted
        assert list(result.path.glob("*.py")) == []
    assert fingerprint(folder) == before


def test_force_never_replaces_a_folder_holding_the_source(tmp_path, demo_source):
    out = tmp_path / "out"
    source = out / "gguf-f16" / "model"
    shutil.copytree(demo_source.path, source, copy_function=_link_or_copy)
    before = fingerprint(source)
    result = phiquant_cli("quantize", str(source), "--out", str(out), *QUICK, "--force")
    assert result.returncode == 5
    assert "holds the source folder" in result.stderr
    assert fingerprint(source) == before
    assert sorted(p.name for p in out.iterdir()) == ["gguf-f16"]


def test_output_that_is_a_file_is_one_clear_error(model, tmp_path):
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" / "out"
    result = phiquant_cli("quantize", str(model), "--out", str(out), *QUICK)
    assert result.returncode == 5, result.stderr
    assert "cannot write to" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_eval_never_writes_its_reports_into_the_source(model, tmp_path, demo_ggufs):
    before = fingerprint(model)
    result = phiquant_cli(
        "eval",
        str(demo_ggufs["F16"].path),
        "--reference",
        str(model),
        "--windows",
        "1",
        "--no-speed",
        "--out",
        str(model),
    )
    assert result.returncode == 5, result.stderr
    assert "lies inside the source folder" in result.stderr
    assert fingerprint(model) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--windows", "0"], "--windows must be at least 1"),
        (["--window-tokens", "9000"], "longer than the model's 8192-token context"),
        (["--text", "binary"], "is not UTF-8 text"),
    ],
)
def test_eval_refuses_settings_it_cannot_score(
    tmp_path, demo_ggufs, arguments, message
):
    (tmp_path / "binary").write_bytes(bytes(range(256)) * 8)
    arguments = [str(tmp_path / a) if a == "binary" else a for a in arguments]
    result = phiquant_cli("eval", str(demo_ggufs["F16"].path), "--no-speed", *arguments)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bits_per_weight", 4.0, "manifest states bits_per_weight 4.0, but its files"),
        ("stop_token_ids", [12345], "lists stop token(s) [12345] that its runtime"),
    ],
)
def test_verify_finds_a_manifest_that_misdescribes_its_files(
    tmp_path, demo_ggufs, field, value, message
):
    copy = tmp_path / "artifact"
    shutil.copytree(demo_ggufs["Q8_0"].path, copy)
    manifest = json.loads((copy / "phiquant.json").read_text())
    (copy / "phiquant.json").write_text(json.dumps(manifest | {field: value}))
    result = phiquant_cli("verify", str(copy))
    assert result.returncode == 6
    assert message in result.stderr


def test_run_names_a_missing_file_instead_of_crashing(tmp_path, demo_ggufs):
    copy = tmp_path / "artifact"
    shutil.copytree(demo_ggufs["Q8_0"].path, copy)
    gguf = next(copy.glob("*.gguf"))
    gguf.unlink()
    result = phiquant_cli("run", str(copy), "-p", "hi")
    assert result.returncode == 6
    assert f"lacks {gguf.name}, listed in its manifest" in result.stderr


def test_a_prompt_longer_than_the_context_is_one_clear_error(demo_ggufs):
    result = phiquant_cli("run", str(demo_ggufs["Q8_0"].path), "-p", "word " * 3000)
    assert result.returncode == 2, result.stderr
    assert "does not fit the 2048-token context" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
