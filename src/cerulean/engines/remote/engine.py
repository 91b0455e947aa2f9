"""An engine in front of remote servers: one deployment served by one or more upstreams.

:class:`RemoteEngine` implements :class:`~cerulean.engines.base.Engine` by passing the request
on — the conversation, tools, ``tool_choice``, tool results, ``response_format``, sampling — in
the upstream's dialect (:mod:`.wire`), after checking that its flavor can honour every parameter
(:mod:`.flavors`). The router (:mod:`.routing`) orders the deployment's upstreams; a failure
before the first chunk (refused connection, timeout, 5xx, 429, a stall) cools that upstream down
and the request moves to the next, within ``retries`` and the request's deadline. After the
first chunk a failure ends the answer with an error (the services send Azure's error event).
Every call has a read timeout, so a stalled upstream never hangs a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cerulean.engines.base import (
    Admission,
    Engine,
    EngineChunk,
    Generation,
    GenerationRequest,
    ModelInfo,
    UpstreamCall,
    request_phases,
)
from cerulean.engines.remote import wire
from cerulean.engines.remote.flavors import Flavor, flavor
from cerulean.engines.remote.routing import Router
from cerulean.engines.remote.stats import UpstreamStats
from cerulean.errors import (
    APIError,
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    ServiceUnavailable,
)
from cerulean.protocol.capabilities import CHAT_CAPABILITIES
from cerulean.store.base import UpstreamRecord

__all__ = ["AZURE_API_VERSION", "RemoteEngine", "Timeouts", "Upstream"]

logger = logging.getLogger(__name__)

AZURE_API_VERSION = "2024-10-21"  # what Cerulean asks of Azure-dialect upstreams
_AFFINITY_CHARS = 2048  # of the system message and first turn: the prompt's shared part
_COOLDOWN_MAX_S = 60.0
# What a request meets on a kept-alive connection the server has just closed: no response.
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True)
class Timeouts:
    """How long an upstream may take: to connect, to send the first chunk, between chunks."""

    connect: float = 5.0
    first_byte: float = 30.0
    read: float = 60.0
    cooldown: float = 5.0  # after a failure; doubles with each consecutive one, up to a minute


class _Retry(Exception):
    """This upstream failed before answering; another may serve the request."""

    def __init__(self, error: APIError, kind: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.kind = kind


@dataclass
class Upstream:
    """One upstream at run time: its record, its flavor's profile, its HTTP client."""

    record: UpstreamRecord
    client: httpx.AsyncClient | None = None  # None: only its URLs and headers are wanted
    failures: int = 0  # consecutive, for the cooldown's backoff
    health_misses: int = 0  # consecutive health checks that timed out (not yet cooled down)
    answered_at: float = float("-inf")  # (monotonic) its last first chunk or finished answer
    profile: Flavor = field(init=False)
    _urls: dict[str, str] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.profile = flavor(self.record.flavor)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def weight(self) -> float:
        return self.record.weight

    @property
    def max_concurrency(self) -> int | None:
        return self.record.max_concurrency

    # An Upstream lives as long as its record is unchanged (the gateway makes a new one for a
    # changed record), so what is derived from the record is worked out once.
    @functools.cached_property
    def address(self) -> str:
        """``host[:port]`` of its URL (the ``server.address`` of its calls' spans)."""
        return httpx.URL(self.record.url).netloc.decode("ascii", errors="replace")

    @property
    def root(self) -> str:
        """The server's root URL (an OpenAI base URL without its ``/v1``)."""
        base = self.record.url.rstrip("/")
        return base.removesuffix("/v1") if self.profile.dialect == "openai" else base

    def url(self, operation: str) -> str:
        """The URL of ``chat/completions`` or ``completions`` on this upstream."""
        url = self._urls.get(operation)
        if url is None:
            url = self._urls[operation] = self._url(operation)
        return url

    def _url(self, operation: str) -> str:
        base = self.record.url.rstrip("/")
        if self.profile.dialect == "azure":
            return (
                f"{base}/openai/deployments/{self.record.model}/{operation}"
                f"?api-version={AZURE_API_VERSION}"
            )
        return f"{base}/{operation}"

    def credential(self) -> str | None:
        """The API key, read now from its environment variable or file (never stored)."""
        if self.record.api_key_env:
            return os.environ.get(self.record.api_key_env) or None
        if self.record.api_key_file:
            try:
                return Path(self.record.api_key_file).read_text().strip() or None
            except OSError:
                logger.warning("upstream %s: cannot read its key file", self.name)
        return None

    def headers(self) -> dict[str, str]:
        key = self.credential()
        if key is None:
            return {}
        if self.profile.dialect == "azure":
            return {"api-key": key}
        return {"authorization": f"Bearer {key}"}


def affinity_key(deployment: str, request: GenerationRequest) -> str:
    """What requests that share a cached prefix have in common: the deployment, the system
    message and the first turn (their first 2 KB), or the raw prompt's start."""
    if request.prompt is not None:
        head = request.prompt if isinstance(request.prompt, str) else repr(request.prompt[:512])
    else:
        head = "\x00".join(m.text for m in request.messages[:2])
    digest = hashlib.blake2b(head[:_AFFINITY_CHARS].encode(), digest_size=16).hexdigest()
    return f"{deployment}\x00{digest}"


def estimate_prompt(request: GenerationRequest) -> int:
    """The prompt's tokens before the upstream counts them: about four characters a token (the
    rule of thumb Azure and OpenAI give), plus a few per message for the chat format."""
    if request.prompt is not None:
        if isinstance(request.prompt, tuple):
            return len(request.prompt)
        return (len(request.prompt) + 3) // 4 + 1
    chars = sum(len(m.text) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages)
    if request.tools is not None:
        chars += sum(len(str(f.parameters)) + len(f.description) for f in request.tools.functions)
    return (chars + 3) // 4 + 4 * len(request.messages)


class RemoteEngine(Engine):
    """Serves one deployment from its upstreams."""

    def __init__(
        self,
        deployment: str,
        model: str,
        upstreams: Sequence[Upstream],
        router: Router,
        stats: UpstreamStats,
        *,
        timeouts: Timeouts = Timeouts(),
        retries: int = 2,
        context_length: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deployment = deployment
        self.upstreams = list(upstreams)
        self._router = router
        self._stats = stats
        self._timeouts = timeouts
        self._retries = retries
        self._clock = clock
        # The upstream checks the context; the edge only reserves it for the rate limits.
        self._info = ModelInfo(
            model, context_length, None, CHAT_CAPABILITIES, context_checked=False
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return True

    def load(self) -> None:
        return None

    async def generate(
        self, request: GenerationRequest, *, admit: Admission | None = None
    ) -> Generation:
        able = self._able(request)
        order, shortest = await self._router.order(affinity_key(self.deployment, request), able)
        if not order:  # refused before anything is charged
            raise self._all_down(shortest)
        estimate = estimate_prompt(request)
        if admit is not None:
            await admit(estimate)
        deadline = self._clock() + self._timeouts.first_byte
        last: APIError = GatewayTimeout(retry_after=1)
        phases = request_phases()
        for upstream in order[: self._retries + 1]:
            if self._clock() >= deadline:
                break
            assert isinstance(upstream, Upstream)
            call = UpstreamCall(upstream.name, upstream.address, time.perf_counter())
            phases.calls.append(call)
            try:
                generation = await self._open(upstream, request, estimate, deadline)
            except _Retry as failed:
                call.ended, call.error = time.perf_counter(), failed.kind
                last = failed.error
                continue
            except BaseException:
                call.ended, call.error = time.perf_counter(), "refused"
                raise
            call.first_byte = time.perf_counter()
            generation.phases = phases
            return generation
        raise last

    def _able(self, request: GenerationRequest) -> list[Upstream]:
        """The upstreams whose flavor honours every parameter (else the 400 naming it)."""
        needed = wire.features(request)
        able = [u for u in self.upstreams if all(f in u.profile.supports for f in needed)]
        if able:
            return able
        missing = next(
            f for f in needed if not any(f in u.profile.supports for u in self.upstreams)
        )
        param = needed[missing]
        flavors = ", ".join(sorted({u.record.flavor for u in self.upstreams}))
        raise InvalidRequest(
            f"The parameter '{param}' is not supported by deployment '{self.deployment}': its "
            f"upstream servers ({flavors}) cannot honour it.",
            param=param,
            code="unsupported_parameter",
        )

    def _all_down(self, shortest: float) -> ServiceUnavailable:
        wait = max(shortest, 0.1)
        return ServiceUnavailable(
            f"Every upstream of deployment {self.deployment} is unavailable or at its "
            f"concurrency limit. Please retry after {wait:.1f} seconds.",
            retry_after=wait,
        )

    async def _open(
        self, upstream: Upstream, request: GenerationRequest, estimate: int, deadline: float
    ) -> Generation:
        """Send ``request`` to ``upstream`` and read until its first chunk (retryable before)."""
        lease = await self._router.state.acquire(upstream.name)
        started = self._clock()
        self._stats.started(upstream.name)
        response: httpx.Response | None = None
        try:
            response = await self._send(upstream, request, deadline)
            reader = wire.StreamReader(estimate)
            # The raw bytes unless the upstream encoded them (or a transport read them already):
            # one layer less for each event.
            raw = "content-encoding" not in response.headers and not response.is_stream_consumed
            lines = _payloads(response.aiter_raw() if raw else response.aiter_bytes())
            first = await asyncio.wait_for(
                _first_chunks(lines, reader), max(deadline - self._clock(), 0.001)
            )
        except BaseException as exc:
            if response is not None:
                await response.aclose()
            await self._router.state.release(upstream.name, lease)
            self._stats.ended(upstream.name, self._clock() - started)
            raise await self._failed(upstream, exc) from None
        upstream.failures = 0
        upstream.answered_at = time.monotonic()
        self._stats.first_byte(upstream.name, self._clock() - started)
        return _RemoteGeneration(self, upstream, response, lines, reader, first, lease, started)

    async def _send(
        self, upstream: Upstream, request: GenerationRequest, deadline: float
    ) -> httpx.Response:
        model = upstream.record.model
        if request.prompt is not None:
            operation, body = "completions", wire.completion_body(request, upstream.profile, model)
        else:
            operation, body = "chat/completions", wire.chat_body(request, upstream.profile, model)
        client = upstream.client
        assert client is not None
        http = client.build_request(
            "POST", upstream.url(operation), json=body, headers=upstream.headers()
        )
        try:
            response = await asyncio.wait_for(
                client.send(http, stream=True), max(deadline - self._clock(), 0.001)
            )
        except _STALE:
            # A kept-alive connection the upstream closed as the request went out: the request
            # never reached it, so it is sent again at once on a new connection (not a failure
            # of the upstream; a refused connection is a ConnectError and is not retried here).
            logger.debug(
                "upstream %s: a kept-alive connection was closed; resending", upstream.name
            )
            response = await asyncio.wait_for(
                client.send(http, stream=True), max(deadline - self._clock(), 0.001)
            )
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise _StatusError(response)
        return response

    async def _failed(self, upstream: Upstream, exc: BaseException) -> BaseException:
        """What a failure before the first chunk becomes: a retry elsewhere (with a cooldown
        for this upstream), or the client's own error (a 400 the upstream found)."""
        if isinstance(exc, asyncio.CancelledError):
            return exc
        if isinstance(exc, _StatusError) and exc.client_error:
            self._stats.error(upstream.name, "client_error")
            return exc.as_invalid_request()
        kind, error, wait = _classify(exc, upstream)
        await self.cool(upstream, kind, wait, "before answering")
        return _Retry(error, kind)

    async def cool(self, upstream: Upstream, kind: str, wait: float | None, when: str) -> None:
        """Count the failure and take ``upstream`` out of routing: for ``wait`` seconds (its own
        retry-after), else the cooldown doubled for each consecutive failure."""
        self._stats.error(upstream.name, kind)
        upstream.failures += 1
        if wait is None:
            wait = min(self._timeouts.cooldown * 2 ** (upstream.failures - 1), _COOLDOWN_MAX_S)
        await self._router.state.cool(upstream.name, wait)
        self._stats.cooled(upstream.name)
        logger.warning(
            "upstream %s of %s failed %s (%s); out of routing for %.1f s",
            upstream.name,
            self.deployment,
            when,
            kind,
            wait,
        )

    async def aclose(self) -> None:
        return None


class _StatusError(Exception):
    """The upstream answered with an error status before any chunk."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status = response.status_code
        self.headers = response.headers
        try:
            payload = response.json()
        except ValueError:
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        self.error: dict[str, Any] = error if isinstance(error, dict) else {}

    @property
    def client_error(self) -> bool:
        """A 400 (or 413, 422): the request itself is wrong, on any upstream."""
        return self.status in (400, 413, 422)

    def as_invalid_request(self) -> InvalidRequest:
        message = self.error.get("message")
        param, code = self.error.get("param"), self.error.get("code")
        return InvalidRequest(
            str(message) if message else "The upstream refused the request.",
            param=str(param) if param is not None else None,
            code=str(code) if code is not None else None,
        )

    def retry_after(self) -> float | None:
        """The upstream's own wait (Azure's ``retry-after-ms`` first), if it gave one."""
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = self.headers.get(name)
            if value is None:
                continue
            with contextlib.suppress(ValueError):
                return max(float(value) * scale, 0.0)
        return None


def _classify(exc: BaseException, upstream: Upstream) -> tuple[str, APIError, float | None]:
    """(error kind for the metrics, the client's error if no other upstream serves, cooldown)."""
    if isinstance(exc, _StatusError):
        if exc.status == 429:
            wait = exc.retry_after()
            return "rate_limited", ServiceUnavailable(retry_after=wait or 1.0), wait
        if exc.status >= 500:
            return "server_error", BadGateway(retry_after=1), None
        # 401, 403, 404...: a misconfigured upstream (a wrong key, model or URL).
        return (
            "misconfigured",
            BadGateway(
                f"An upstream of this deployment refused the request (HTTP {exc.status}); "
                "check its URL, model and credentials (cerulean upstreams probe).",
                retry_after=1,
            ),
            None,
        )
    if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
        return "timeout", GatewayTimeout(retry_after=1), None
    if isinstance(exc, httpx.TransportError):
        return "connect", BadGateway(retry_after=1), None
    if isinstance(exc, wire.UpstreamStreamError):
        return "bad_stream", BadGateway(retry_after=1), None
    logger.error("upstream %s: unexpected failure", upstream.name, exc_info=exc)
    return "unexpected", BadGateway(retry_after=1), None


async def _first_chunks(
    payloads: AsyncIterator[str], reader: wire.StreamReader
) -> list[EngineChunk]:
    """Read events until one gives chunks (or the stream ends); what it gave."""
    async for payload in payloads:
        chunks = reader.feed(payload)
        if chunks or reader.started:
            return chunks
    if reader.finals:
        return reader.close()
    raise wire.UpstreamStreamError("the stream ended before its first chunk")


async def _payloads(body: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent event stream (one line each, as servers send),
    split from the body's bytes in one place.

    httpx's ``aiter_lines`` would do it through two more generator layers and an incremental
    text decoder per chunk; a gateway relays every token through here, so the lines are split
    on ``\n`` here (a ``\r`` before it is stripped) and only ``data:`` lines are decoded — a
    line is whole bytes, so UTF-8 is never cut inside a character.
    """
    rest = b""
    async for chunk in body:
        if rest:
            chunk = rest + chunk
        *lines, rest = chunk.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip().decode("utf-8", errors="replace")
    if rest.startswith(b"data:"):
        yield rest[5:].strip().decode("utf-8", errors="replace")


class _RemoteGeneration(Generation):
    """An answer streaming from an upstream; the first chunks were read by :meth:`_open`."""

    first_chunk_in_hand = True

    def __init__(
        self,
        engine: RemoteEngine,
        upstream: Upstream,
        response: httpx.Response,
        lines: AsyncIterator[str],
        reader: wire.StreamReader,
        first: list[EngineChunk],
        lease: str,
        started: float,
    ) -> None:
        self._engine = engine
        self._upstream = upstream
        self._response = response
        self._lines = lines
        self._reader = reader
        self._first = first
        self._lease: str | None = lease
        self._started = started
        self.prompt_tokens = reader.prompt_estimate
        self.prompt_filter_results = reader.prompt_filter_results

    async def __aiter__(self) -> AsyncIterator[EngineChunk]:
        try:
            for chunk in self._first:
                yield chunk
            if self._reader.closed:  # the whole answer came with the first read
                return
            try:
                async for payload in self._lines:
                    for chunk in self._reader.feed(payload):
                        yield chunk
            except (httpx.HTTPError, wire.UpstreamStreamError) as exc:
                raise await self._broken(exc) from None
            finals = self._reader.close()
            if not finals:
                raise await self._broken(wire.UpstreamStreamError("the stream ended early"))
            self._upstream.answered_at = time.monotonic()
            if self._reader.usage is not None:
                self.prompt_tokens = self._reader.usage["prompt_tokens"]
            for chunk in finals:
                yield chunk
        finally:
            await self.aclose()

    async def _broken(self, exc: BaseException) -> APIError:
        """After the first chunk: no retry; the answer ends with Azure's error event."""
        kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "broken_stream"
        if self.phases is not None and self.phases.calls:
            self.phases.calls[-1].error = kind
        engine = self._engine
        await engine.cool(self._upstream, kind, None, f"mid-answer ({exc})")
        message = (
            f"The upstream serving deployment {engine.deployment} stopped in the middle of the "
            "answer; the answer is incomplete. Please retry."
        )
        if kind == "timeout":
            return GatewayTimeout(message, retry_after=1)
        return BadGateway(message, retry_after=1)

    async def aclose(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        if self.phases is not None and self.phases.calls:
            self.phases.calls[-1].ended = time.perf_counter()
        await self._response.aclose()
        engine = self._engine
        await engine._router.state.release(self._upstream.name, lease)
        engine._stats.ended(self._upstream.name, engine._clock() - self._started)
