"""Run and score MLX artifacts through mlx-lm, as ``mlx_lm.load`` opens them.

Two failures of MLX builds are reported as a broken artifact rather than as
a score: non-finite logits, and a model that predicts one token everywhere
(4-bit Phi-4-mini answering "!!!!!!", mlx-examples issue 1307).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from phiquant.backends.base import ChatStream, Runner
from phiquant.backends.mlx.build import NO_REMOTE_CODE
from phiquant.errors import ArtifactError
from phiquant.native_output import captured_native_stderr

# Tokens per forward pass when scoring; longer windows continue from the cache.
SCORE_CHUNK_TOKENS = 512
# Windows at least this long whose every position predicts one token are broken.
SAME_TOKEN_MIN_POSITIONS = 32
# A reply of this many copies of one token, never ending its turn, is broken.
SAME_TOKEN_MIN_REPLY = 16
BROKEN_TODO = (
    "The artifact is broken (a known failure of low-bit MLX builds); rebuild it "
    "with more bits, e.g. mlx:int8 or mlx:mixed_4_6"
)


class MLXRunner(Runner):
    """One MLX artifact folder loaded with ``mlx_lm.load``.

    Chat uses the artifact's chat template and stops at the tokenizer's EOS
    set as mlx-lm loads it, as any mlx-lm front end would.
    """

    def __init__(self, artifact_dir: Path) -> None:
        from mlx_lm import load

        with captured_native_stderr("mlx-lm model load"):
            self._model, self._tokenizer = load(
                str(artifact_dir), tokenizer_config=NO_REMOTE_CODE
            )

    @property
    def stop_token_ids(self) -> set[int]:
        return set(self._tokenizer.eos_token_ids)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 128) -> ChatStream:
        from mlx_lm import stream_generate

        if not self._tokenizer.has_chat_template:
            raise ArtifactError(
                "the artifact has no chat template",
                "Chat needs an instruct model with a template; score it instead",
            )
        prompt_ids = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True
        )
        state = {"tokens": 0, "reason": "length"}

        def pieces() -> Iterator[str]:
            generated: list[int] = []
            for response in stream_generate(
                self._model, self._tokenizer, prompt_ids, max_tokens=max_tokens
            ):
                _check_finite(response.logprobs, "a reply")
                if response.finish_reason == "stop":
                    state["reason"] = "stop"
                else:
                    generated.append(response.token)
                if response.text:
                    yield response.text
            state["tokens"] = len(generated)
            if state["reason"] == "length":
                _check_not_one_token(generated, self._tokenizer)

        return ChatStream(pieces(), lambda: (state["tokens"], state["reason"]))

    def generate_ids(
        self, prompt_ids: Sequence[int], max_new_tokens: int
    ) -> Iterator[int]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step

        steps = generate_step(
            mx.array(list(prompt_ids)), self._model, max_tokens=max_new_tokens
        )
        for token, logprobs in steps:
            _check_finite(logprobs, "generation")
            yield int(token)

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        ids = list(token_ids)
        cache = make_prompt_cache(self._model)
        chunks = []
        for start in range(0, len(ids), SCORE_CHUNK_TOKENS):
            window = mx.array([ids[start : start + SCORE_CHUNK_TOKENS]])
            logits = self._model(window, cache=cache)[0].astype(mx.float32)
            chunks.append(np.array(logits, copy=True))
        scores = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

        broken = ~np.isfinite(scores).all(axis=-1)
        if broken.any():
            raise ArtifactError(
                f"MLX produced NaN or infinite logits at {int(broken.sum())} of "
                f"{len(ids)} positions",
                BROKEN_TODO,
            )
        predicted = scores.argmax(axis=-1)
        if len(ids) >= SAME_TOKEN_MIN_POSITIONS and (predicted == predicted[0]).all():
            raise ArtifactError(
                f"every position of a {len(ids)}-token window predicts the same "
                f"token ({_shown(int(predicted[0]), self._tokenizer)})",
                BROKEN_TODO,
            )
        return scores

    def close(self) -> None:
        import mlx.core as mx

        self._model = None
        mx.clear_cache()


def _check_finite(logprobs, during: str) -> None:
    import mlx.core as mx

    if not mx.all(mx.isfinite(logprobs)).item():
        raise ArtifactError(
            f"MLX produced NaN or infinite logits during {during}", BROKEN_TODO
        )


def _check_not_one_token(generated: list[int], tokenizer) -> None:
    if len(generated) >= SAME_TOKEN_MIN_REPLY and len(set(generated)) == 1:
        raise ArtifactError(
            f"the reply is one token repeated {len(generated)} times "
            f"({_shown(generated[0], tokenizer)})",
            BROKEN_TODO,
        )


def _shown(token: int, tokenizer) -> str:
    return f"id {token}, {tokenizer.decode([token])!r}"
