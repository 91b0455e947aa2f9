"""Pure ASGI middleware: request ids and Azure headers, path normalising, body limit, auth.

They are plain ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched
and a client disconnect still reaches the endpoint.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerulean.auth import KeyVerifier, check_credentials
from cerulean.errors import (
    APIError,
    InternalServerError,
    InvalidSubscriptionKey,
    MissingCredentials,
    RequestTooLarge,
)
from cerulean.ids import request_id

__all__ = [
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "NormalizePathMiddleware",
    "RequestContextMiddleware",
    "error_response",
]

logger = logging.getLogger(__name__)
_SLASHES = re.compile(r"/{2,}")


def error_response(exc: APIError) -> JSONResponse:
    """The one place an :class:`APIError` becomes an HTTP response."""
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers or None)


class RequestContextMiddleware:
    """Gives each request its ids and stamps Azure's response headers (§6) on every response.

    Also the last line of defence: an unexpected exception before the response started becomes
    Azure's 500 body quoting the request id, never a bare traceback page.
    """

    def __init__(self, app: ASGIApp, *, region: str) -> None:
        self.app = app
        self.region = region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id()
        client_rid = Headers(scope=scope).get("x-ms-client-request-id")
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = MutableHeaders(scope=message)
                headers["apim-request-id"] = rid
                headers["x-request-id"] = rid
                headers["x-ms-client-request-id"] = client_rid or rid
                headers["x-ms-region"] = self.region
                headers["openai-processing-ms"] = f"{(time.perf_counter() - started) * 1000:.4f}"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error (request %s)", rid)
            if response_started:
                raise
            await error_response(InternalServerError(rid))(scope, receive, send_with_headers)


class NormalizePathMiddleware:
    """Collapses ``//`` runs: old SDKs send ``//openai/...`` for endpoints ending in ``/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope)
            scope["path"] = _SLASHES.sub("/", scope["path"])
            scope["raw_path"] = scope["path"].encode("latin-1", errors="replace")
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes, by Content-Length up front or while reading."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await error_response(RequestTooLarge(self.limit))(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


class AuthMiddleware:
    """Deny by default: every path but the public ones needs a valid account key (§2)."""

    def __init__(
        self, app: ASGIApp, *, verifier: Callable[[], KeyVerifier], public: frozenset[str]
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        verdict = check_credentials(Headers(scope=scope), self.verifier())
        if verdict.ok:
            await self.app(scope, receive, send)
            return
        error: APIError = InvalidSubscriptionKey() if verdict.api_key_sent else MissingCredentials()
        await error_response(error)(scope, receive, send)
