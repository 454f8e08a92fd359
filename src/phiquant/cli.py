"""The ``phiquant`` command line: thin wrappers over :mod:`phiquant.api`."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from phiquant import __version__, api
from phiquant.errors import PhiquantError
from phiquant.report.progress import RichProgress
from phiquant.report.terminal import (
    print_devices,
    print_evaluation,
    print_inspection,
    print_quantize_table,
    print_targets,
)

app = typer.Typer(
    help=(
        "Turn a Phi-family model into quantized artifacts for edge runtimes "
        "(GGUF for llama.cpp, ONNX Runtime GenAI, OpenVINO, MLX), run them, "
        "compare them on one yardstick and pick what to ship.\n\n"
        "Start with `phiquant quantize`: it builds the built-in demo model in "
        "three GGUF precisions, shows each one answering and scores them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
stdout = Console()
stderr = Console(stderr=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        stdout.print(f"phiquant {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and runtime logs.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what phiquant does.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def quantize(
    source: Annotated[
        str,
        typer.Argument(
            help="`demo` (built-in SmolLM2-135M in Phi-3 layout), a local Hugging "
            "Face folder, or a hub id such as microsoft/Phi-3-mini-4k-instruct."
        ),
    ] = "demo",
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            "-t",
            help="Target BACKEND:PRECISION\\[@DEVICE], repeatable: gguf:int4 "
            "(Q4_K_M), gguf:Q5_K_M, onnx:int4, onnx:fp16@cuda, openvino:int8, "
            "mlx:bf16... (`phiquant targets` lists all). Default: gguf:fp16, "
            "gguf:int8, gguf:int4.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the artifacts. Default: phiquant-out/<model name>."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace artifacts that already exist.")
    ] = False,
    revision: Annotated[
        str | None, typer.Option(help="Hub revision (branch, tag or commit).")
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            help="Accept pickle weights (pytorch_model.bin); they can run code."
        ),
    ] = False,
    prompt: Annotated[
        str, typer.Option(help="Question each artifact answers once built.")
    ] = api.DEFAULT_PROMPT,
    no_test: Annotated[
        bool, typer.Option("--no-test", help="Skip the test answer.")
    ] = False,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Backend setting BACKEND.NAME=VALUE, repeatable, e.g. "
            "onnx.block_size=128 (see each backend's options in the README).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Build a device profile's targets (with --to: those too): phone, "
            "iot, ai-pc-intel, ai-pc-qualcomm, mac, nvidia-gpu, cpu-server "
            "(`phiquant devices`)."
        ),
    ] = None,
    evaluate: Annotated[
        bool | None,
        typer.Option(
            "--eval/--no-eval",
            help="Score the artifacts against the fp32 source afterwards (as "
            "`phiquant eval`) and write the reports beside them. Default: on for "
            "the demo, off otherwise, since the fp32 reference of a large model "
            "needs its full size in memory.",
        ),
    ] = None,
) -> None:
    """Build quantized artifacts from SOURCE and show each one answering.

    With no arguments this is the demo: the built-in model in GGUF F16, Q8_0
    and Q4_K_M under ./phiquant-out/demo, a table of size, bits per weight
    and each artifact's answer, then their evaluation against the original.

    Examples:

      phiquant quantize

      phiquant quantize ./Phi-3-mini-4k-instruct --to gguf:int4 --to onnx:int4

      phiquant quantize ./Phi-4-mini-instruct --device phone
    """
    with RichProgress(stderr) as progress:
        results = api.quantize(
            source,
            to,
            out=out,
            force=force,
            revision=revision,
            allow_pickle=allow_pickle,
            prompt=None if no_test else prompt,
            device=device,
            options=api.parse_options(option),
            progress=progress,
        )
    print_quantize_table(stdout, results, None if no_test else prompt)

    if evaluate is None:
        evaluate = source == api.DEMO_NAME
    if evaluate:
        _evaluate_and_print([result.path for result in results])


def _evaluate_and_print(artifacts: list[Path], **options) -> None:
    with RichProgress(stderr) as progress:
        evaluation, paths = api.evaluate(artifacts, progress=progress, **options)
    print_evaluation(stdout, evaluation)
    stdout.print(f"Reports: {paths['html']}, {paths['markdown']}, {paths['json']}")


@app.command(name="eval")
def eval_command(
    artifacts: Annotated[
        list[Path],
        typer.Argument(
            help="Artifact folders or .gguf files to score; a folder of artifacts "
            "(as `phiquant quantize --out` writes) stands for all of them."
        ),
    ],
    reference: Annotated[
        str | None,
        typer.Option(
            help="Source to compare against (default: the one the artifacts were "
            "built from, from their manifests)."
        ),
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(help="UTF-8 text to score on. Default: WikiText-2 test."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the reports. Default: the artifacts' folder."),
    ] = None,
    windows: Annotated[int, typer.Option(help="Token windows to score.")] = 16,
    window_tokens: Annotated[int, typer.Option(help="Tokens per window.")] = 512,
    speed: Annotated[
        bool, typer.Option("--speed/--no-speed", help="Measure speed and memory.")
    ] = True,
    long_context: Annotated[
        bool | None,
        typer.Option(
            "--long-context/--no-long-context",
            help="Score one window past the sliding window or longrope switch "
            "(default: when the model has one).",
        ),
    ] = None,
) -> None:
    """Score artifacts on the same text against the same fp32 reference.

    Every artifact gets the same token windows (the reference tokenizer's
    output) and is compared with the source model run in fp32 by
    transformers: perplexity, KL divergence per position (mean, 99th
    percentile, max), top-1 agreement; then load time, prefill and decode
    speed, time to first token and peak memory, each artifact in its own
    process. Writes results.json, report.md and report.html.

    Examples:

      phiquant eval phiquant-out/demo

      phiquant eval phiquant-out/demo/gguf-q4_k_m phiquant-out/demo/onnx-int4-cpu
    """
    _evaluate_and_print(
        artifacts,
        reference=reference,
        text=text,
        json_path=json_path,
        out=out,
        windows=windows,
        window_tokens=window_tokens,
        speed=speed,
        long_context=long_context,
    )


@app.command()
def report(
    results: Annotated[
        Path,
        typer.Argument(
            help="Folder holding results.json (where `phiquant eval` wrote its "
            "reports), or the results.json file itself."
        ),
    ],
) -> None:
    """Rebuild the terminal table and the reports from stored results.

    Rewrites report.md and report.html beside results.json without scoring
    anything again.

    Example: phiquant report phiquant-out/demo
    """
    evaluation, paths = api.report(results)
    print_evaluation(stdout, evaluation)
    stdout.print(f"Reports: {paths['html']}, {paths['markdown']}, {paths['json']}")


@app.command()
def run(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder or .gguf file.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message.")],
    max_tokens: Annotated[
        int, typer.Option(help="Stop after this many tokens if no end-of-turn comes.")
    ] = 256,
    system: Annotated[str | None, typer.Option(help="Optional system message.")] = None,
) -> None:
    """Chat once with an artifact: its own template, greedy, streamed.

    Generation stops at the model's end-of-turn token, as a deployed runtime
    would.

    Example: phiquant run phiquant-out/demo/gguf-q4_k_m -p "Name three colours."
    """
    stream = api.run(artifact, prompt, max_tokens=max_tokens, system=system)
    for piece in stream:
        stdout.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
    stdout.print()
    if stream.result and stream.result.finish_reason != "stop":
        stderr.print(
            f"[yellow]stopped after {max_tokens} tokens, "
            "before the end-of-turn token[/]"
        )


@app.command()
def inspect(
    path: Annotated[
        str, typer.Argument(help="A source (demo, folder, hub id) or an artifact.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show architecture, tensor types, size and bits per weight of a model.

    For a source: rope kind, sliding window, rotary dims, tied head, stop
    tokens and KV-cache bytes per token. For an artifact: its metadata and
    the real mix of tensor types.
    """
    report = api.inspect(path)
    if as_json:
        stdout.print_json(json.dumps(report, default=str))
    else:
        print_inspection(stdout, report)


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder to check.")],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="Question for the test answer.")
    ] = "What is 2 + 2?",
    max_tokens: Annotated[
        int, typer.Option(help="The reply must end its turn within this many tokens.")
    ] = 128,
) -> None:
    """Re-hash every file against the manifest, load the artifact, check it stops.

    Exits non-zero with one line naming the first problem: a missing, extra
    or changed file, a runtime that cannot load it, or a reply that never
    reaches the end-of-turn token.
    """
    result = api.verify(artifact, prompt, max_tokens)
    if result.answer is None:
        stdout.print(
            f"OK: {_files_match(result.files_checked)} the manifest; the artifact "
            "loads and continues a text (no chat template to test a turn with)."
        )
        return
    stdout.print(
        f"OK: {_files_match(result.files_checked)} the manifest; the artifact "
        f"answered in {result.answer.n_tokens} tokens and stopped at its "
        "end-of-turn token."
    )
    stdout.print(f"[dim]{result.answer.text.strip()}[/]", markup=True, highlight=False)


def _files_match(count: int) -> str:
    return "1 file matches" if count == 1 else f"{count} files match"


@app.command()
def recommend(
    device: Annotated[str, typer.Option(help="Device profile (`phiquant devices`).")],
    artifacts: Annotated[
        Path, typer.Argument(help="Folder of artifacts (and their results.json).")
    ] = api.DEFAULT_OUT / api.DEMO_NAME,
    ram: Annotated[
        str | None,
        typer.Option(help="Memory budget instead of the profile's, e.g. 4GB."),
    ] = None,
    context: Annotated[
        int | None, typer.Option(help="Context length to fit, in tokens.")
    ] = None,
    max_kld: Annotated[
        float | None, typer.Option(help="Largest acceptable mean KL divergence.")
    ] = None,
) -> None:
    """Pick the smallest artifact that runs on the device, fits and is accurate enough.

    Memory is weights + KV cache at the context length + the runtime's own
    overhead (or the peak measured by `phiquant eval`, if larger). Quality
    is the mean KL divergence from `phiquant eval`. Exits 1 if nothing
    qualifies.

    Examples:

      phiquant quantize --device phone && phiquant recommend --device phone

      phiquant recommend --device phone --ram 1GB --max-kld 0.05 out/phi3
    """
    result = api.recommend(
        device, artifacts, ram=ram, context_tokens=context, max_kld=max_kld
    )
    for line in result.explain():
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)
    if result.chosen is None:
        raise typer.Exit(1)


@app.command()
def devices() -> None:
    """List device profiles: targets, memory budget, context and quality budget."""
    print_devices(stdout)


@app.command()
def targets() -> None:
    """List backends, their precisions and what each maps to."""
    print_targets(stdout)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Raising here unwinds like Ctrl-C: staging folders are removed on the way.
    raise SystemExit(128 + signum)


def main() -> None:
    """Console entry point: one-line errors, tracebacks only with --debug."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        app()
    except PhiquantError as error:
        if _state["debug"]:
            raise
        # Plain print: one line, never wrapped to the terminal's width.
        print(f"phiquant: {error.message}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
