"""Pure ASGI middleware: request ids and Azure headers, path normalising, body limit, auth.

They are plain ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched
and a client disconnect still reaches the endpoint.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerulean.errors import (
    APIError,
    AuthenticationTypeDisabled,
    InternalServerError,
    InvalidSubscriptionKey,
    MissingCredentials,
    RequestTooLarge,
)
from cerulean.protocol.ids import request_id
from cerulean.services import accounting
from cerulean.services.auth import KeyVerifier, bearer_token, check_credentials
from cerulean.services.entra import looks_like_jwt
from cerulean.services.identity import EntraAuth

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
    """Collapses ``//`` runs (old SDKs send ``//openai/...`` for endpoints ending in ``/``) and
    drops a trailing ``/``, so the slash form is served as it is.

    Not a redirect: Starlette's slash redirect builds its ``location`` from the ``Host`` header
    (``Host: evil.example`` sent clients, with their ``api-key``, to that host), so the app turns
    it off (``redirect_slashes=False``) and this serves both forms directly.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            normal = _SLASHES.sub("/", path) if "//" in path else path
            if len(normal) > 1 and normal.endswith("/"):
                normal = normal.rstrip("/") or "/"
            if normal != path:
                scope = dict(scope)
                scope["path"] = normal
                scope["raw_path"] = normal.encode("latin-1", errors="replace")
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes, by Content-Length up front or while reading.

    ``larger`` gives the paths (after normalising) whose POST bodies may be bigger — file
    uploads, which their route streams to disk — their own limit.
    """

    def __init__(self, app: ASGIApp, *, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.default
        if scope.get("method") == "POST":
            limit = self.larger.get(scope["path"].rstrip("/"), self.default)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(RequestTooLarge(limit))(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class AuthMiddleware:
    """Deny by default: every path but the public ones needs a valid account key or, where an
    Entra ID issuer is trusted, a bearer token whose principal holds the operation's role (§2).

    A bearer credential that is a JWT goes to ``entra`` (none configured: Azure's 401); any
    other credential is an account key, refused with 403 ``AuthenticationTypeDisabled`` while
    ``local_auth_disabled()`` says so. ``refresh`` (when given) brings the verifier's digests
    (and that flag) up to date before a check, and again after a failed one (a key regenerated
    by another process). Paths under ``own_auth`` prefixes (the management API) are passed
    through: their routes check their own credentials, and account keys must not open them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Callable[[], KeyVerifier],
        public: frozenset[str],
        refresh: Callable[[bool], Awaitable[bool]] | None = None,
        own_auth: tuple[str, ...] = (),
        entra: Callable[[], EntraAuth | None] = lambda: None,
        local_auth_disabled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.public = public
        self.refresh = refresh
        self.own_auth = own_auth
        self.entra = entra
        self.local_auth_disabled = local_auth_disabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.public
            or (self.own_auth and scope["path"].startswith(self.own_auth))
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "api-key" not in headers:
            token = bearer_token(headers)
            if token is not None and looks_like_jwt(token):
                await self._token(scope, receive, send, token)
                return
        # The key path, as fast as before Entra ID: no I/O but the digests' periodic re-read.
        if self.refresh is not None:
            await self.refresh(False)
        presented = "api-key" in headers or "authorization" in headers
        if presented and self.local_auth_disabled():
            await error_response(AuthenticationTypeDisabled())(scope, receive, send)
            return
        verdict = check_credentials(headers, self.verifier())
        if not verdict.ok and presented and self.refresh is not None and await self.refresh(True):
            verdict = check_credentials(headers, self.verifier())
        if verdict.ok:
            accounting.current().caller = verdict.caller
            await self.app(scope, receive, send)
            return
        error: APIError = InvalidSubscriptionKey() if verdict.api_key_sent else MissingCredentials()
        await error_response(error)(scope, receive, send)

    async def _token(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        entra = self.entra()
        outcome: APIError | str = MissingCredentials()
        if entra is not None:
            outcome = await entra.data_plane(token, scope.get("method", "GET"), scope["path"])
        if isinstance(outcome, str):  # the principal: usage is accounted to it
            accounting.current().caller = outcome
            await self.app(scope, receive, send)
        else:
            await error_response(outcome)(scope, receive, send)
