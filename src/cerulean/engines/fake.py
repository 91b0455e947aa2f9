"""A deterministic engine for tests of the HTTP layer (never a default).

Its handler answers a request with pieces, one "token" each: text, or
:class:`~cerulean.engines.base.ToolCallDelta` objects for an answer that calls functions (it
then finishes with ``tool_calls``), as any engine gives them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from cerulean.engines.base import (
    Admission,
    ChatMessage,
    Engine,
    EngineChunk,
    FinishReason,
    Generation,
    GenerationRequest,
    ModelInfo,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from cerulean.errors import InvalidRequest

__all__ = ["FAKE_VOCAB", "FakeEngine", "fake_logprob"]

Piece = str | ToolCallDelta
Handler = Callable[[GenerationRequest], list[Piece]]

FAKE_VOCAB = 1000  # token ids of raw prompts must be below this


def _prompt_text(request: GenerationRequest) -> str:
    prompt = request.prompt
    if isinstance(prompt, tuple):
        return " ".join(str(t) for t in prompt)
    return prompt or ""


def _echo(request: GenerationRequest) -> list[Piece]:
    if request.prompt is not None:
        return [" You", " said:", " " + _prompt_text(request)]
    return ["You said: ", request.messages[-1].text]


def fake_logprob(piece: str, position: int, k: int) -> TokenLogprob:
    """The fake's log probabilities: piece ``i`` has logprob ``-0.25 * (i + 1)``; it is the
    likeliest, and its ``k - 1`` alternatives ``alt1``... follow, each 1.0 less likely."""
    logprob = -0.25 * (position + 1)
    top = [TopLogprob(piece, logprob, piece.encode())]
    top += [TopLogprob(f"alt{j}", logprob - j, f"alt{j}".encode()) for j in range(1, k)]
    return TokenLogprob(piece, logprob, piece.encode(), tuple(top[:k]))


class _FakeGeneration(Generation):
    def __init__(
        self,
        pieces: list[Piece],
        prompt_tokens: int,
        max_tokens: int,
        delay: float,
        n: int = 1,
        *,
        logprobs: int | None = None,
        echo: str | None = None,
    ) -> None:
        self._pieces = pieces
        self.prompt_tokens = prompt_tokens
        self._max = max_tokens
        self._delay = delay
        self._n = n
        self._logprobs = logprobs
        self._echo = echo
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        for index in range(self._n):
            if self._echo:
                scored: tuple[TokenLogprob, ...] = ()
                if self._logprobs is not None:  # the prompt as one token nothing predicts
                    scored = (TokenLogprob(self._echo, None, self._echo.encode()),)
                yield EngineChunk(text=self._echo, index=index, logprobs=scored)
            produced = 0
            for piece in self._pieces:
                if produced >= self._max or self.closed:
                    break
                await asyncio.sleep(self._delay)
                produced += 1
                if isinstance(piece, ToolCallDelta):
                    yield EngineChunk(index=index, tool_calls=(piece,))
                    continue
                scored = ()
                if self._logprobs is not None:
                    scored = (fake_logprob(piece, produced - 1, self._logprobs),)
                yield EngineChunk(text=piece, index=index, logprobs=scored)
            finish: FinishReason = "length" if produced < len(self._pieces) else "stop"
            if finish == "stop" and any(isinstance(p, ToolCallDelta) for p in self._pieces):
                finish = "tool_calls"
            yield EngineChunk(
                finish_reason=finish,
                index=index,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=produced,
            )

    async def aclose(self) -> None:
        self.closed = True


class FakeEngine(Engine):
    """Answers with ``handler(request)`` pieces, one "token" each; a word per message is a token.

    A raw prompt counts a token per word (or per id) plus one; ids must be below
    :data:`FAKE_VOCAB`.
    """

    def __init__(
        self,
        handler: Handler = _echo,
        *,
        name: str = "fake-model",
        context_length: int = 64,
        delay: float = 0.0,
    ) -> None:
        self._handler = handler
        self._info = ModelInfo(name, context_length, 16)
        self._ready = False
        self._delay = delay
        self.generations: list[_FakeGeneration] = []
        self.requests: list[GenerationRequest] = []

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return self._ready

    def load(self) -> None:
        self._ready = True

    async def count_prompt_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        """A word per message is a token, plus one per message."""
        return sum(len(m.text.split()) + 1 for m in messages)

    def _raw_prompt_tokens(self, prompt: str | tuple[int, ...]) -> int:
        if isinstance(prompt, str):
            return len(prompt.split()) + 1
        for token in prompt:
            if not 0 <= token < FAKE_VOCAB:
                raise InvalidRequest(f"Invalid token id in 'prompt': {token}.", param="prompt")
        return len(prompt) + 1

    async def generate(
        self, request: GenerationRequest, *, admit: Admission | None = None
    ) -> Generation:
        self.requests.append(request)
        raw = request.prompt is not None
        if request.suffix is not None:
            raise InvalidRequest("This fake has no fill-in-the-middle tokens.", param="suffix")
        if request.prompt is not None:
            prompt = self._raw_prompt_tokens(request.prompt)
        else:
            prompt = await self.count_prompt_tokens(request.messages)
        if admit is not None:
            await admit(prompt)
        cap = self._info.completion_budget(prompt, request.params.max_tokens, raw=raw)
        generation = _FakeGeneration(
            self._handler(request),
            prompt,
            cap,
            self._delay,
            request.n,
            logprobs=request.params.logprobs,
            echo=_prompt_text(request) if request.echo else None,
        )
        self.generations.append(generation)
        return generation

    def stats(self) -> dict[str, int]:
        running = sum(not g.closed for g in self.generations)
        return {"slots": 1, "slots_busy": min(running, 1), "waiting": 0, "running": running}

    async def aclose(self) -> None:
        self._ready = False
