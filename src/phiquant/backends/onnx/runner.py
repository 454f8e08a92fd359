"""Run and score ONNX artifacts in ONNX Runtime GenAI.

Chat goes through GenAI's own chat template, tokenizer and greedy search, so
a reply stops where any GenAI application would stop it. Scoring appends a
whole window at once and reads the logits of every position.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from phiquant.backends.base import ChatStream, Runner
from phiquant.backends.onnx.build import config_stop_token_ids, read_genai_config
from phiquant.backends.onnx.providers import config_device, ensure_runnable
from phiquant.errors import UsageError
from phiquant.native_output import captured_native_stderr


class GenAIRunner(Runner):
    """One ONNX Runtime GenAI folder, loaded once.

    GenAI sizes its key/value cache per request (``max_length``), so
    ``context_tokens`` only caps chat replies; scoring may use the model's
    whole context.
    """

    def __init__(self, folder: Path, context_tokens: int = 2048) -> None:
        import onnxruntime_genai as og

        config = read_genai_config(folder)
        ensure_runnable(config_device(config))
        self._og = og
        with captured_native_stderr("ONNX Runtime GenAI model load"):
            self._model = og.Model(str(folder))
        self._tokenizer = og.Tokenizer(self._model)
        # A second tokenizer for plain text: no BOS or other special tokens added.
        self._plain_tokenizer = og.Tokenizer(self._model)
        self._plain_tokenizer.update_options(add_special_tokens="false")
        self._stop_ids = set(config_stop_token_ids(config))
        self._model_context = int(config["model"]["context_length"])
        self._chat_context = min(context_tokens, self._model_context)

    @property
    def stop_token_ids(self) -> set[int]:
        return self._stop_ids

    def tokenize(self, text: str) -> list[int]:
        return [int(i) for i in self._plain_tokenizer.encode(text)]

    def _generator(self, max_length: int):
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(
            do_sample=False, max_length=max_length, repetition_penalty=1.0
        )
        return self._og.Generator(self._model, params)

    def _check_length(self, needed: int, limit: int, what: str) -> None:
        if needed > limit:
            raise UsageError(
                f"{what} needs {needed} tokens, more than the {limit} this "
                "artifact allows",
                "Shorten the input",
            )

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 128) -> ChatStream:
        prompt = self._tokenizer.apply_chat_template(
            json.dumps(messages), add_generation_prompt=True
        )
        prompt_ids = self._tokenizer.encode(prompt)
        self._check_length(len(prompt_ids) + 1, self._chat_context, "the prompt")
        max_length = min(len(prompt_ids) + max_tokens, self._chat_context)
        state = {"tokens": 0, "reason": "length"}

        def pieces() -> Iterator[str]:
            generator = self._generator(max_length)
            generator.append_tokens(prompt_ids)
            decoder = self._tokenizer.create_stream()
            while not generator.is_done():
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                if token in self._stop_ids:
                    state["reason"] = "stop"
                    return
                state["tokens"] += 1
                piece = decoder.decode(token)
                if piece:
                    yield piece

        return ChatStream(pieces(), lambda: (state["tokens"], state["reason"]))

    def generate_ids(
        self, prompt_ids: Sequence[int], max_new_tokens: int
    ) -> Iterator[int]:
        # GenAI's search ends at EOS; picking the argmax here keeps decoding
        # past stop tokens, as timing needs, at the same one step per token.
        total = len(prompt_ids) + max_new_tokens
        self._check_length(total, self._model_context, "the generation")
        generator = self._generator(total)
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        for count in range(1, max_new_tokens + 1):
            token = int(np.argmax(generator.get_logits()[0, -1]))
            yield token
            if count < max_new_tokens:
                generator.append_tokens(np.array([token], dtype=np.int32))

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        self._check_length(len(token_ids), self._model_context, "the window")
        generator = self._generator(len(token_ids))
        generator.append_tokens(np.asarray(token_ids, dtype=np.int32))
        logits = generator.get_output("logits")
        return np.array(logits[0, : len(token_ids)], dtype=np.float32, copy=True)

    def close(self) -> None:
        self._tokenizer = self._plain_tokenizer = self._model = None
