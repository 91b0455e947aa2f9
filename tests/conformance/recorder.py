"""Tee every response the tests' HTTP clients receive into a recorder, for the conformance check.

* real clients (openai 1.x, raw httpx) get an ``httpx`` client whose transport wraps the default
  one: :func:`recording_client`, :func:`recording_async_client`, passed to the SDK as
  ``http_client=``. Bodies are copied as the client reads them, so streams stay streams and a
  client that stops reading early records a partial stream (``complete=False``).
* the in-process ``TestClient`` (an ``httpx.Client``) gets a response hook:
  :func:`record_responses`.

``tests/conftest.py`` validates what each test recorded when the test ends.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from tests.conformance.validator import Exchange

__all__ = [
    "RECORDER",
    "Recorder",
    "record_responses",
    "recording_async_client",
    "recording_client",
]


class Recorder:
    """Exchanges recorded since the last :meth:`drain`, tagged with the test that ran them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Exchange] = []
        self.origin = ""
        self.total = 0

    def add(
        self,
        request: httpx.Request,
        response: httpx.Response,
        body: bytes,
        complete: bool,
        origin: str | None = None,
    ) -> None:
        """Record ``body`` (decoded) of ``response``; ``complete`` if the client read it all.

        ``origin`` is the test that sent the request (a stream may be closed after it ended).
        """
        exchange = Exchange(
            method=request.method,
            path=request.url.path,
            api_version=request.url.params.get("api-version"),
            status=response.status_code,
            content_type=response.headers.get("content-type", ""),
            body=body,
            complete=complete,
            origin=self.origin if origin is None else origin,
        )
        with self._lock:
            self._pending.append(exchange)
            self.total += 1

    def drain(self) -> list[Exchange]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending


RECORDER = Recorder()


def _decoded(response: httpx.Response, raw: bytes) -> bytes:
    """``raw`` with its content-encoding undone (httpx's own decoders)."""
    if response.headers.get("content-encoding", "identity") == "identity":
        return raw
    try:
        return httpx.Response(200, headers=response.headers, content=raw).read()
    except httpx.DecodingError:
        return raw  # a stream cut short mid-frame


class _Tee:
    """Collects a body's bytes and records it once, when the body is closed."""

    def __init__(self, on_close: Callable[[bytes, bool], None]) -> None:
        self._parts: list[bytes] = []
        self._on_close = on_close
        self.finished = False
        self._closed = False

    def keep(self, chunk: bytes) -> bytes:
        self._parts.append(chunk)
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(b"".join(self._parts), self.finished)


class _SyncTeeStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, tee: _Tee) -> None:
        self._inner = inner
        self._tee = tee

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            yield self._tee.keep(chunk)
        self._tee.finished = True

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tee.close()


class _AsyncTeeStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, tee: _Tee) -> None:
        self._inner = inner
        self._tee = tee

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield self._tee.keep(chunk)
        self._tee.finished = True

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._tee.close()


def _tee(recorder: Recorder, request: httpx.Request, response: httpx.Response) -> _Tee:
    origin = recorder.origin

    def record(raw: bytes, complete: bool) -> None:
        recorder.add(request, response, _decoded(response, raw), complete, origin)

    return _Tee(record)


class RecordingTransport(httpx.BaseTransport):
    """Wraps a transport; every response body is recorded when the client closes it."""

    def __init__(self, inner: httpx.BaseTransport | None = None, recorder: Recorder = RECORDER):
        self._inner = inner or httpx.HTTPTransport()
        self._recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _SyncTeeStream(response.stream, _tee(self._recorder, request, response))
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """The asynchronous twin of :class:`RecordingTransport`."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, recorder: Recorder = RECORDER
    ):
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _AsyncTeeStream(response.stream, _tee(self._recorder, request, response))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def recording_client(**kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` (for ``AzureOpenAI(http_client=...)`` or direct use) that records."""
    return httpx.Client(transport=RecordingTransport(), **kwargs)


def recording_async_client(**kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (for ``AsyncAzureOpenAI(http_client=...)``) that records."""
    return httpx.AsyncClient(transport=AsyncRecordingTransport(), **kwargs)


def record_responses(client: httpx.Client, recorder: Recorder = RECORDER) -> None:
    """Record every response of an in-process ``TestClient`` (its bodies are already whole)."""

    def hook(response: httpx.Response) -> None:
        recorder.add(response.request, response, response.read(), True)

    client.event_hooks["response"].append(hook)
