"""Compress an exported IR's weights to int8 or int4 with NNCF.

Compression runs on the fp16 IR that optimum-intel wrote, in place: one
export serves every precision, and NNCF's own OpenVINO backend does the work
(the same call optimum-intel makes for ``--weight-format int4``). Data-aware
modes (AWQ, scale estimation, GPTQ) run the IR over calibration samples cut
from a text, offline.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

from phiquant.backends.openvino.export import MODEL_BIN, MODEL_XML
from phiquant.backends.openvino.options import (
    BACKUP_MODE,
    Calibration,
    CompressionSettings,
)
from phiquant.errors import ArtifactError, UsageError
from phiquant.native_output import captured_native_stderr
from phiquant.sources import ModelSource

log = logging.getLogger(__name__)

# Rough upper bound of characters per token, to cut only the needed tail of a
# long text before tokenizing it.
CHARS_PER_TOKEN_BOUND = 16


def compress_ir(
    folder: Path, settings: CompressionSettings, source: ModelSource
) -> None:
    """Replace ``folder``'s IR weights with NNCF-compressed ones."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(folder / MODEL_XML)
    arguments = _nncf_arguments(settings)
    if settings.calibration is not None:
        samples = calibration_samples(source, settings.calibration, model)
        arguments["dataset"] = nncf.Dataset(samples)
        arguments["subset_size"] = len(samples)

    with _quiet_nncf(), captured_native_stderr("NNCF weight compression"):
        try:
            compressed = nncf.compress_weights(model, **arguments)
        except (
            nncf.InvalidGroupSizeError,
            nncf.ParameterNotSupportedError,
            nncf.ValidationError,
        ) as error:
            raise ArtifactError(
                f"NNCF refused to compress to {settings.mode} "
                f"({' '.join(str(error).split())})",
                "Change the target's options (group_size, ratio, data-aware modes)",
            ) from error

    # The compressed model still reads constants from the fp16 .bin, so it is
    # saved beside it and only then swapped in.
    staged = folder / "openvino_model.compressed.xml"
    ov.save_model(compressed, staged, compress_to_fp16=False)
    del model, compressed
    staged.replace(folder / MODEL_XML)
    staged.with_suffix(".bin").replace(folder / MODEL_BIN)


def _nncf_arguments(settings: CompressionSettings) -> dict:
    from nncf import BackupMode, CompressWeightsMode, SensitivityMetric

    arguments: dict = {"mode": CompressWeightsMode(settings.mode)}
    if settings.is_int4:
        arguments |= {
            "group_size": settings.group_size,
            "ratio": settings.ratio,
            "backup_mode": BackupMode(BACKUP_MODE),
            "sensitivity_metric": SensitivityMetric(settings.sensitivity_metric),
            "awq": settings.awq,
            "scale_estimation": settings.scale_estimation,
            "gptq": settings.gptq,
        }
    return arguments


def calibration_samples(
    source: ModelSource, calibration: Calibration, model
) -> list[dict]:
    """Model inputs for ``calibration.samples`` windows cut from a text.

    The windows come from the end of the text: phiquant's evaluation windows
    start at the beginning of the same default text, so the two do not
    overlap. Each window is one prefill from an empty KV cache.
    """
    import numpy as np

    from phiquant.evaluate.reference import tokenize_text
    from phiquant.evaluate.text import load_text

    needed = calibration.samples * calibration.tokens_per_sample
    text = load_text(calibration.text_path)
    token_ids = tokenize_text(source, text[-needed * CHARS_PER_TOKEN_BOUND :])
    if len(token_ids) < needed:
        token_ids = tokenize_text(source, text)
    if len(token_ids) < needed:
        raise UsageError(
            f"the calibration text has {len(token_ids)} tokens, fewer than the "
            f"{needed} asked for ({calibration.samples} samples of "
            f"{calibration.tokens_per_sample})",
            "Use a longer text or lower calibration_samples/calibration_tokens",
        )

    length = calibration.tokens_per_sample
    input_names = {model_input.get_any_name() for model_input in model.inputs}
    samples = []
    for index in range(calibration.samples):
        end = len(token_ids) - index * length
        window = np.array([token_ids[end - length : end]], dtype=np.int64)
        inputs = {
            "input_ids": window,
            "attention_mask": np.ones_like(window),
            "position_ids": np.arange(length, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        samples.append({k: v for k, v in inputs.items() if k in input_names})
    return samples


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """Keep NNCF's tables and progress bars off the terminal; log them instead.

    NNCF logs through its own stdout handler and draws rich progress bars on
    ``sys.stdout``; library code must not print, so both are captured and
    handed to ``logging`` at debug level.
    """
    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        nncf_logger.setLevel(level)
        if captured.getvalue().strip():
            log.debug("NNCF printed:\n%s", captured.getvalue().strip())
