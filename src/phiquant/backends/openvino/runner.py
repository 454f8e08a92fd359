"""Run OpenVINO IR folders in OpenVINO GenAI; score them with plain OpenVINO."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from phiquant.backends.base import ChatStream, Runner
from phiquant.backends.openvino.export import MODEL_XML
from phiquant.errors import ArtifactError
from phiquant.native_output import captured_native_stderr

DEVICE = "CPU"
# The CPU plugin computes in bf16 where the processor has bf16 units (Xeons
# with AMX or AVX512-BF16) and in f32 elsewhere, Intel's client CPUs included.
# Pinning f32 makes scores independent of the machine that measures them
# (bf16 compute cost an fp16 IR 3 points of top-1 agreement here) and keeps
# them what an AI PC computes.
RUNTIME_PROPERTIES = {"INFERENCE_PRECISION_HINT": "f32"}
_DONE = object()


class OpenVINORunner(Runner):
    """One IR folder, opened exactly as ``openvino_genai.LLMPipeline`` opens it.

    Chat and generation go through the GenAI pipeline, with the chat
    template, tokenizer and stop tokens stored in the folder. GenAI returns
    the logits of the last position only, so scoring compiles the IR with
    plain OpenVINO (compiled when first asked) and reads a whole window's
    logits in one prefill.
    """

    def __init__(self, folder: Path, context_tokens: int = 2048) -> None:
        import openvino_genai

        self._genai = openvino_genai
        self._folder = Path(folder)
        # OpenVINO grows its KV cache as needed; context_tokens sets no limit.
        self._context_tokens = context_tokens
        # Loaded now, not on first use, so that timing a load and then a
        # generation (evaluate/speed.py) puts the load where it belongs.
        with captured_native_stderr("OpenVINO GenAI load"):
            self._pipeline = openvino_genai.LLMPipeline(
                str(folder), DEVICE, **RUNTIME_PROPERTIES
            )
        self._tokenizer = self._pipeline.get_tokenizer()
        self._score_request = None
        self._active: tuple[threading.Thread, threading.Event] | None = None

    @property
    def stop_token_ids(self) -> set[int]:
        defaults = self._pipeline.get_generation_config()
        stop_ids = {int(i) for i in defaults.stop_token_ids}
        if defaults.eos_token_id >= 0:
            stop_ids.add(int(defaults.eos_token_id))
        return stop_ids

    def tokenize(self, text: str) -> list[int]:
        encoded = self._tokenizer.encode(text, add_special_tokens=False)
        return [int(i) for i in encoded.input_ids.data[0]]

    def _greedy_config(self, max_new_tokens: int):
        config = self._pipeline.get_generation_config()
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        config.num_beams = 1
        config.repetition_penalty = 1.0
        return config

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 128) -> ChatStream:
        config = self._greedy_config(max_tokens)
        history = self._genai.ChatHistory(messages)
        outcome = {}

        def run(emit: Callable[[object], object]) -> None:
            outcome["result"] = self._pipeline.generate(history, config, emit)

        def finish() -> tuple[int, str]:
            result = outcome["result"]
            stop = self._genai.GenerationFinishReason.STOP
            stopped = result.finish_reasons[0] == stop
            generated = result.perf_metrics.get_num_generated_tokens()
            # GenAI reports STOP when a stop token ended the reply and counts
            # that token; the reply's text, and llama.cpp's count, do not.
            return (generated - 1, "stop") if stopped else (generated, "length")

        return ChatStream(self._streamed(run), finish)

    def generate_ids(
        self, prompt_ids: Sequence[int], max_new_tokens: int
    ) -> Iterator[int]:
        import openvino as ov

        config = self._greedy_config(max_new_tokens)
        config.ignore_eos = True
        config.stop_token_ids = set()
        prompt = ov.Tensor(np.array([list(prompt_ids)], dtype=np.int64))
        genai = self._genai

        class TokenStreamer(genai.StreamerBase):
            def __init__(self, emit: Callable[[object], object]) -> None:
                super().__init__()
                self._emit = emit

            def write(self, token):
                status = genai.StreamingStatus.RUNNING
                for token_id in token if isinstance(token, list) else [token]:
                    status = self._emit(int(token_id))
                return status

            def end(self) -> None:
                pass

        def run(emit: Callable[[object], object]) -> None:
            self._pipeline.generate(prompt, config, TokenStreamer(emit))

        return self._streamed(run)

    def _streamed(self, run: Callable[[Callable[[object], object]], None]) -> Iterator:
        """Yield what ``run`` emits while it runs in a worker thread.

        GenAI's generate blocks until the reply is complete and reports each
        piece through a callback; a thread turns that into an iterator, and
        the callback tells GenAI to stop once the consumer has stopped.
        """
        items: queue.Queue = queue.Queue()
        stop = threading.Event()
        status = self._genai.StreamingStatus

        def emit(item: object) -> object:
            items.put(item)
            return status.STOP if stop.is_set() else status.RUNNING

        def work() -> None:
            try:
                run(emit)
            except Exception as error:  # handed to the consuming thread
                items.put(error)
            finally:
                items.put(_DONE)

        thread = threading.Thread(target=work, name="openvino-genai", daemon=True)
        self._active = (thread, stop)
        thread.start()
        try:
            while (item := items.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise ArtifactError(
                        f"OpenVINO GenAI failed while generating ({item})",
                        "Run with --debug for the runtime's log",
                    ) from item
                yield item
        finally:
            self._stop_active()

    def _stop_active(self) -> None:
        if self._active is not None:
            thread, stop = self._active
            stop.set()
            thread.join()
            self._active = None

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        request = self._scoring_request()
        count = len(token_ids)
        window = np.array([list(token_ids)], dtype=np.int64)
        inputs = {
            "input_ids": window,
            "attention_mask": np.ones_like(window),
            "position_ids": np.arange(count, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, dtype=np.int32),
        }
        names = {port.get_any_name() for port in request.model_inputs}
        request.reset_state()
        request.infer({k: v for k, v in inputs.items() if k in names})
        logits = request.get_tensor("logits").data[0, :count]
        request.reset_state()
        return np.array(logits, dtype=np.float32, copy=True)

    def _scoring_request(self):
        if self._score_request is None:
            import openvino as ov

            with captured_native_stderr("OpenVINO compile"):
                compiled = ov.Core().compile_model(
                    self._folder / MODEL_XML, DEVICE, RUNTIME_PROPERTIES
                )
            self._score_request = compiled.create_infer_request()
        return self._score_request

    def close(self) -> None:
        self._stop_active()
        self._pipeline = self._tokenizer = self._score_request = None
