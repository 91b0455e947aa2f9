"""Running the app under uvicorn, with the connection limits a public listener needs.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) but has no header-read
timeout: a client that opens a connection and never finishes its request headers (slowloris)
holds a descriptor for ever, and a few thousand of them exhaust the process's descriptors.
Hypercorn and granian have such a timeout, but switching servers would change the streaming,
disconnect and lifespan behaviour every test pins down; the gap is one timer per connection, so
it is closed here instead, in a subclass of uvicorn's httptools protocol (llhttp's C parser):
:class:`HeaderTimeoutProtocol`. The event loop is uvloop: a gateway relays every token of every
stream through Python, and uvloop's transports and httptools' parser cut the gateway's CPU per
streamed request by about a third against asyncio's loop and h11 (``bench/gateway_overhead.py``,
docs/benchmarks.md "Gateway").

The rule (``docs/operations.md``): a request's headers must be complete within
``header_timeout`` seconds of the connection opening (first request) or of the request's first
byte (later requests on a kept-alive connection); otherwise the server answers Azure's 408 body
and closes the connection. Between requests the idle timer is uvicorn's ``timeout_keep_alive``
(``keep_alive_timeout``). Request bodies are not covered: a body that stalls is the app's
business (a request handler waits for it, bounded by the body limit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cerulean.settings import Settings

__all__ = ["HeaderTimeoutProtocol", "raise_fd_limit", "uvicorn_config"]

logger = logging.getLogger(__name__)

_TIMEOUT_BODY = json.dumps(
    {
        "error": {
            "code": "RequestTimeout",
            "message": "The request headers did not arrive in time; the connection is closed.",
        }
    }
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request headers do not complete
    within ``header_timeout`` seconds (set on the class by :func:`protocol_with_timeout`)."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        idle = before is None or before.response_complete
        if idle and self._header_timer is None:
            self._arm_header_timer()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if self.cycle is not before:  # the parser read a request line and all its headers
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_header_timer()  # idle now: uvicorn's keep-alive timer takes over

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request is being served (pipelined bytes armed the timer): not idle
        if self.transport.is_closing():
            return
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def protocol_with_timeout(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """:class:`HeaderTimeoutProtocol` with ``header_timeout`` (uvicorn builds one instance per
    connection from the class, so the setting travels as a class attribute)."""
    return type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
    )


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``cerulean serve`` (and of the tests that run the server)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        loop="uvloop",
        http=protocol_with_timeout(settings.header_timeout),
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout)),
        log_config=None,  # uvicorn's lines go through configure_logging's format
        access_log=False,  # cerulean.access writes a richer line per request
    )


def raise_fd_limit() -> int:
    """Raise this process's soft descriptor limit to its hard limit (each open connection is a
    descriptor; the usual soft limit of 1,024 is reached long before memory or CPU); the new
    soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.debug("could not raise the descriptor limit from %d", soft)
    return soft
