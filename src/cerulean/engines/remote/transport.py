"""The HTTP transport of the gateway's upstream clients: HTTP/1.1 on asyncio, parsed by httptools.

Why not httpx's own transport: a gateway relays every token of every answer through its upstream
connection, so reading one server-sent event is paid tens of times a second per stream, on the
cores the engine needs (docs/benchmarks.md, "Where the gateway's CPU goes"). httpx's transport
(httpcore over anyio, HTTP/1.1 parsed by the pure-Python h11, a cancel scope per read) spends
about 0.3 ms of CPU per event on this project's 2-core machine; an asyncio protocol feeding the C
parser uvicorn already uses (httptools, llhttp) about 0.13 ms, close to the cost of the wake-up
itself. aiohttp's client parses in C too (about 0.18 ms), but drops the bytes it has buffered
when the connection then breaks — the tokens an upstream sent just before dying — and would be
one more dependency. The engine, its tests and the health checks keep httpx's interface
(requests, responses, timeouts and exceptions, raised as httpx's transport raises them): only the
bytes move here. An upstream reached through a proxy (``HTTP(S)_PROXY``) uses httpx's own
transport, which speaks to proxies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

__all__ = ["UpstreamTransport"]

_HIGH_WATER = 256 * 1024  # bytes buffered before the socket stops being read


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.answered = False  # a byte of the response has come
        self.error: httpx.TransportError | None = None
        self._body: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the upstream's response is not HTTP: {exc}"))
            return
        if self._buffered > _HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headers_done and not self._delimited():
                self.complete = True  # a body that ends with the connection (no length given)
            else:
                # What h11 reports: the server closed before the whole response came.
                self.error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                    if self.headers_done
                    else "Server disconnected without sending a response."
                )
        self._wake()

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()  # (only right inside a callback)

    # -- the client's side ------------------------------------------------------------------------

    def _delimited(self) -> bool:
        return any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers)

    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        self.close()
        self._wake()

    def raise_failure(self, request: httpx.Request) -> None:
        """Raise the connection's failure, if it has one, as a failure of ``request``."""
        if self.error is not None:
            self.error.request = request
            raise self.error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None, request: httpx.Request) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            raise httpx.ReadTimeout(
                "timed out reading from the upstream", request=request
            ) from None
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.writelines((head, body))

    async def response_head(self, timeout: float | None, request: httpx.Request) -> None:
        while not self.headers_done:
            self.raise_failure(request)
            await self.wait(timeout, request)

    def take(self) -> bytes | None:
        """The body's bytes that have arrived (None: none yet); what arrived before a failure
        is taken before the failure is raised."""
        if not self._body:
            return None
        pieces, self._body, self._buffered = self._body, [], 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    def __init__(
        self,
        pool: UpstreamTransport,
        key: tuple[str, str, int],
        connection: _Connection,
        request: httpx.Request,
        read: float | None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._connection: _Connection | None = connection
        self._request = request
        self._read = read

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        # The loop is here, not in a generator of the connection's: one layer less per event.
        read, request = self._read, self._request
        while True:
            piece = connection.take()
            if piece is not None:
                yield piece
                continue
            connection.raise_failure(request)
            if connection.complete:
                return
            await connection.wait(read, request)

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; one abandoned part-way
        # (a client that went away) closes it, which is how the upstream learns to stop.
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(self._key, connection)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncBaseTransport` for HTTP/1.1 upstreams, with kept-alive connections.

    ``keepalive_expiry``: seconds an idle connection is kept (httpx's ``Limits`` field of that
    name). Timeouts come from each request as httpx sets them: ``connect`` bounds the
    connection, ``read`` every wait for the response's next bytes. Connections are unlimited in
    number (the router's ``--max-concurrency`` bounds them per upstream).
    """

    def __init__(self, *, keepalive_expiry: float = 5.0, verify: bool = True) -> None:
        self._keepalive = keepalive_expiry
        self._ssl = httpx.create_ssl_context(verify=verify)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._proxies = urllib.request.getproxies_environment()
        self._proxied = httpx.AsyncHTTPTransport(verify=verify, trust_env=True)
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if _proxied(url, self._proxies):
            return await self._proxied.handle_async_request(request)
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme}://'."
            )
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = await request.aread()
        connection = self._reused(key)
        if connection is not None:
            try:
                await self._exchange(connection, request, body, timeout)
                return self._response(key, connection, request, timeout)
            except httpx.RemoteProtocolError:
                # A kept-alive connection the upstream closed as this request went out (its
                # keep-alive timeout, e.g. llama-server's 5 s, raced ours) answered nothing:
                # the upstream never read the request, so it goes once more on a new one (as
                # browsers and Go's net/http do). A response begun and then cut is not sent again.
                if connection.answered:
                    raise
        connection = await self._connect(key, timeout.get("connect"), request)
        await self._exchange(connection, request, body, timeout)
        return self._response(key, connection, request, timeout)

    @staticmethod
    async def _exchange(
        connection: _Connection,
        request: httpx.Request,
        body: bytes,
        timeout: dict[str, float | None],
    ) -> None:
        connection.send(_head(request), body)
        try:
            await connection.response_head(timeout.get("read"), request)
        except BaseException:
            connection.close()
            raise

    def _response(
        self,
        key: tuple[str, str, int],
        connection: _Connection,
        request: httpx.Request,
        timeout: dict[str, float | None],
    ) -> httpx.Response:
        return httpx.Response(
            status_code=connection.status,
            headers=connection.headers,
            stream=_Body(self, key, connection, request, timeout.get("read")),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _reused(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        return None

    async def _connect(
        self, key: tuple[str, str, int], timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = (
            {"ssl": self._ssl, "server_hostname": host} if scheme == "https" else {}
        )
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port, **tls), timeout
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                "timed out connecting to the upstream", request=request
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return connection

    def release(self, key: tuple[str, str, int], connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        await self._proxied.aclose()


def _head(request: httpx.Request) -> bytes:
    """The request line and headers (httpx has validated them; Host is among them)."""
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target)]
    lines.extend(b"%s: %s" % (name, value) for name, value in request.headers.raw)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _proxied(url: httpx.URL, proxies: dict[str, str]) -> bool:
    """Whether the environment names a proxy for ``url`` (as httpx's ``trust_env`` reads it)."""
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return not bypass(url.host, proxies)
