"""The remote engine's connection handling: a kept-alive connection the upstream closed as the
request went out is sent again on a new one, without counting as the upstream's failure."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import httpx

from cerulean.engines.base import ChatMessage, GenerationRequest
from cerulean.engines.remote.engine import RemoteEngine, Upstream, _payloads
from cerulean.engines.remote.routing import InProcessRoutingState, Router
from cerulean.engines.remote.stats import UpstreamStats
from cerulean.services.gateway import Gateway
from cerulean.settings import Settings
from cerulean.store.base import UpstreamRecord

ASK = GenerationRequest((ChatMessage("user", "hi"),))


def _stream() -> bytes:
    base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    ]
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def _engine(handler: httpx.MockTransport) -> tuple[RemoteEngine, InProcessRoutingState]:
    record = UpstreamRecord(
        "u", "http://upstream.test/v1", "openai", "m", None, None, None, 1.0,
        datetime.now(timezone.utc),
    )  # fmt: skip
    client = httpx.AsyncClient(transport=handler)
    state = InProcessRoutingState()
    engine = RemoteEngine("dep", "m", [Upstream(record, client)], Router(state), UpstreamStats())
    return engine, state


async def _answer(engine: RemoteEngine) -> str:
    generation = await engine.generate(ASK)
    return "".join([chunk.text async for chunk in generation])


def test_a_closed_kept_alive_connection_is_sent_again_without_a_cooldown() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, content=_stream(), headers={"content-type": "text/event-stream"})

    engine, state = _engine(httpx.MockTransport(handler))

    async def scenario() -> None:
        assert await _answer(engine) == "Hi"
        assert calls["n"] == 2
        assert await state.cooldowns(["u"]) == {}  # not the upstream's failure
        assert await state.outstanding(["u"]) == {"u": 0}

    asyncio.run(scenario())


def test_a_refused_connection_is_a_failure_and_cools_the_upstream_down() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ConnectError("Connection refused")

    engine, state = _engine(httpx.MockTransport(handler))

    async def scenario() -> None:
        try:
            await _answer(engine)
        except Exception as exc:  # the Azure-shaped error the services answer
            assert type(exc).__name__ == "BadGateway"
        else:
            raise AssertionError("a refused connection must fail")
        assert calls["n"] == 1  # not resent: the upstream is down
        assert set(await state.cooldowns(["u"])) == {"u"}
        assert await state.outstanding(["u"]) == {"u": 0}

    asyncio.run(scenario())


def _gateway_upstream(handler: httpx.MockTransport) -> tuple[Gateway, Upstream]:
    gateway = Gateway(None, Settings(), InProcessRoutingState())  # type: ignore[arg-type]
    record = UpstreamRecord(
        "u", "http://upstream.test/v1", "openai", "m", None, None, None, 1.0,
        datetime.now(timezone.utc),
    )  # fmt: skip
    return gateway, Upstream(record, httpx.AsyncClient(transport=handler))


def test_one_slow_health_check_is_tolerated_two_cool_the_upstream_down() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    gateway, upstream = _gateway_upstream(httpx.MockTransport(slow))

    async def scenario() -> None:
        state = gateway.router.state
        assert await gateway.check(upstream) is False
        assert await state.cooldowns(["u"]) == {}  # busy, not down: still routed
        assert await gateway.check(upstream) is False
        assert set(await state.cooldowns(["u"])) == {"u"}

    asyncio.run(scenario())


def test_slow_health_checks_of_an_upstream_that_still_answers_never_cool_it() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    async def scenario() -> None:
        gateway, upstream = _gateway_upstream(httpx.MockTransport(slow))
        upstream.answered_at = time.monotonic()  # an answer streamed just now
        for _ in range(4):
            assert await gateway.check(upstream) is False
        assert await gateway.router.state.cooldowns(["u"]) == {}
        gateway, upstream = _gateway_upstream(httpx.MockTransport(refused))
        upstream.answered_at = time.monotonic()
        assert await gateway.check(upstream) is False  # a refusal is an outage all the same
        assert set(await gateway.router.state.cooldowns(["u"])) == {"u"}

    asyncio.run(scenario())


def test_a_refused_health_check_cools_the_upstream_down_at_once() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    gateway, upstream = _gateway_upstream(httpx.MockTransport(refused))

    async def scenario() -> None:
        state = gateway.router.state
        assert await gateway.check(upstream) is False
        assert set(await state.cooldowns(["u"])) == {"u"}

    asyncio.run(scenario())


def test_sse_payloads_are_split_from_the_body_bytes() -> None:
    """Events split anywhere between chunks — inside a line, inside a UTF-8 character, between
    \\r and \\n — come out whole; only ``data:`` lines count; a last line without \\n too."""
    body = 'data: {"a": "é"}\r\n\r\n: keep-alive\n\nevent: x\ndata: [DONE]'.encode()
    expected = ['{"a": "é"}', "[DONE]"]

    async def read(chunks: list[bytes]) -> list[str]:
        async def source() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return [p async for p in _payloads(source())]

    assert asyncio.run(read([body])) == expected
    for cut in range(1, len(body)):  # every place one split can fall
        assert asyncio.run(read([body[:cut], body[cut:]])) == expected, cut
    assert asyncio.run(read([bytes([b]) for b in body])) == expected
