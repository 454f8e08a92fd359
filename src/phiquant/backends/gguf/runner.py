"""Run and score GGUF artifacts in llama.cpp through llama-cpp-python."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from phiquant.backends.base import ChatStream, Runner
from phiquant.backends.gguf.reader import gguf_stop_token_ids
from phiquant.errors import ArtifactError, UsageError
from phiquant.native_output import captured_native_stderr

# llama.cpp processes prompts in batches of this many tokens.
BATCH_TOKENS = 512


def _threads() -> int:
    return max(1, os.cpu_count() or 1)


class LlamaCppRunner(Runner):
    """One GGUF file loaded in llama.cpp.

    Chat uses the template and end-of-generation tokens stored in the file, as
    any llama.cpp front end would. Scoring opens a second context that keeps
    the logits of every position, and only when first asked.
    """

    def __init__(self, gguf_path: Path, context_tokens: int = 2048) -> None:
        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self._path = gguf_path
        self._context_tokens = context_tokens
        self._llama_class = llama_cpp.Llama
        # Reading the metadata first turns a corrupt file into a clear error.
        self._stop_ids = set(gguf_stop_token_ids(gguf_path))
        self._score_model = None
        self._chat_model = self._open(logits_all=False, context_tokens=context_tokens)

    def _open(self, *, logits_all: bool, context_tokens: int):
        try:
            with captured_native_stderr("llama.cpp model load"):
                return self._llama_class(
                    model_path=str(self._path),
                    n_ctx=context_tokens,
                    n_batch=min(BATCH_TOKENS, context_tokens),
                    n_threads=_threads(),
                    logits_all=logits_all,
                    verbose=False,
                )
        except ValueError as error:
            raise ArtifactError(
                f"llama.cpp could not load {self._path} ({error})",
                "The file is truncated or corrupt; rebuild it, or run with "
                "--debug to see llama.cpp's log",
            ) from error

    @property
    def stop_token_ids(self) -> set[int]:
        return self._stop_ids

    def tokenize(self, text: str) -> list[int]:
        return self._chat_model.tokenize(
            text.encode("utf-8"), add_bos=False, special=False
        )

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 128) -> ChatStream:
        chunks = self._chat_model.create_chat_completion(
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            top_k=1,
            repeat_penalty=1.0,
            stream=True,
        )
        state = {"tokens": 0, "reason": "length"}

        def pieces():
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    content = choice["delta"].get("content")
                    if content:
                        # llama-cpp-python streams one chunk per generated token.
                        state["tokens"] += 1
                        yield content
                    if choice.get("finish_reason"):
                        state["reason"] = choice["finish_reason"]
            except ValueError as error:  # llama-cpp-python's "exceed context window"
                raise UsageError(
                    f"the chat does not fit the {self._context_tokens}-token "
                    f"context ({error})",
                    "Shorten the prompt",
                ) from error

        return ChatStream(pieces(), lambda: (state["tokens"], state["reason"]))

    def generate_ids(
        self, prompt_ids: Sequence[int], max_new_tokens: int
    ) -> Iterator[int]:
        steps = self._chat_model.generate(
            list(prompt_ids), top_k=1, temp=0.0, repeat_penalty=1.0, reset=True
        )
        for count, token in enumerate(steps, start=1):
            yield int(token)
            if count >= max_new_tokens:
                return

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        needed = len(token_ids)
        if self._score_model is None or self._score_model.n_ctx() < needed:
            self._score_model = self._open(
                logits_all=True, context_tokens=max(needed, self._context_tokens)
            )
        model = self._score_model
        model.reset()
        model.eval(list(token_ids))
        return np.array(model.scores[:needed], dtype=np.float32, copy=True)

    def close(self) -> None:
        for model in (self._chat_model, self._score_model):
            if model is not None:
                model.close()
        self._chat_model = self._score_model = None
