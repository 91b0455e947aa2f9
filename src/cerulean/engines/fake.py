"""A deterministic engine for tests of the HTTP layer (never a default)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from cerulean.engines.base import (
    ChatMessage,
    Engine,
    EngineChunk,
    FinishReason,
    Generation,
    GenerationRequest,
    ModelInfo,
)
from cerulean.errors import ContextLengthExceeded

__all__ = ["FakeEngine"]

Handler = Callable[[GenerationRequest], list[str]]


def _echo(request: GenerationRequest) -> list[str]:
    return ["You said: ", request.messages[-1].content]


class _FakeGeneration(Generation):
    def __init__(
        self, pieces: list[str], prompt_tokens: int, max_tokens: int, delay: float, n: int = 1
    ) -> None:
        self._pieces = pieces
        self.prompt_tokens = prompt_tokens
        self._max = max_tokens
        self._delay = delay
        self._n = n
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        for index in range(self._n):
            produced = 0
            for piece in self._pieces:
                if produced >= self._max or self.closed:
                    break
                await asyncio.sleep(self._delay)
                produced += 1
                yield EngineChunk(text=piece, index=index)
            finish: FinishReason = "length" if produced < len(self._pieces) else "stop"
            yield EngineChunk(
                finish_reason=finish,
                index=index,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=produced,
            )

    async def aclose(self) -> None:
        self.closed = True


class FakeEngine(Engine):
    """Answers with ``handler(request)`` pieces, one "token" each; a word per message is a token."""

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

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return self._ready

    def load(self) -> None:
        self._ready = True

    async def count_prompt_tokens(self, messages: tuple[ChatMessage, ...]) -> int:
        return sum(len(m.content.split()) + 1 for m in messages)

    async def generate(self, request: GenerationRequest) -> Generation:
        prompt = await self.count_prompt_tokens(request.messages)
        limit = self._info.context_length
        wanted = request.params.max_tokens
        if prompt >= limit or (wanted is not None and prompt + wanted > limit):
            raise ContextLengthExceeded(limit=limit, prompt_tokens=prompt, completion_tokens=wanted)
        cap = wanted if wanted is not None else self._info.default_max_tokens or limit
        generation = _FakeGeneration(self._handler(request), prompt, cap, self._delay, request.n)
        self.generations.append(generation)
        return generation

    def stats(self) -> dict[str, int]:
        running = sum(not g.closed for g in self.generations)
        return {"slots": 1, "slots_busy": min(running, 1), "waiting": 0, "running": running}

    async def aclose(self) -> None:
        self._ready = False
