"""Rendering Studio pages, and the checks every Studio request passes (session, CSRF, origin)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from cerulean import __version__
from cerulean.errors import ControlError, StudioError
from cerulean.services.studio import COOKIE_NAME, Session, StudioSessions, same_origin
from cerulean.state import AppState

__all__ = [
    "ASSETS",
    "SECURITY_HEADERS",
    "SignInRequired",
    "control_status",
    "form_fields",
    "page",
    "require_session",
    "sessions",
    "studio_error_page",
    "utc_time",
]

PREFIX = "/studio"
ASSETS = Path(__file__).parent / "static"
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_MAX_FORM_BYTES = 256 * 1024

# No inline script, nothing from another origin, never framed; pages never cached.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

NAV = (
    ("playground", "Playground"),
    ("deployments", "Deployments"),
    ("keys", "Keys and endpoint"),
    ("usage", "Usage"),
    ("upstreams", "Upstreams"),
    ("batches", "Batches"),
    ("content-filters", "Content filters"),
    ("roles", "Roles"),
)
_CONTROL_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in page (the handler in ``routes``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sessions(state: AppState) -> StudioSessions:
    if state.studio is None:
        raise StudioError(404, "StudioDisabled", "Cerulean Studio is off on this server.")
    return state.studio


def page(
    name: str,
    *,
    session: Session | None,
    active: str = "",
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A rendered page with the Studio's security headers."""
    template = _TEMPLATES.get_template(name)
    html = template.render(
        session=session,
        csrf=session.csrf if session is not None else "",
        nav=NAV,
        active=active,
        prefix=PREFIX,
        version=__version__,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def studio_error_page(exc: StudioError, session: Session | None) -> HTMLResponse:
    return page(
        "message.html",
        session=session,
        status=exc.status_code,
        title="Refused",
        message=exc.message,
        code=exc.code,
    )


def control_status(exc: ControlError) -> int:
    """The status of a page that shows a management refusal (as the ARM API answers it)."""
    return _CONTROL_STATUS[exc.reason]


def utc_time(value: datetime | float | None) -> str:
    """A stored time (a datetime or Unix seconds) as the pages show it."""
    if value is None:
        return ""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def redirect(path: str) -> RedirectResponse:
    """A 303 to a Studio path (never built from a request header)."""
    return RedirectResponse(PREFIX + path, status_code=303, headers=SECURITY_HEADERS)


def current_session(request: Request, state: AppState) -> Session | None:
    return sessions(state).find(request.cookies.get(COOKIE_NAME))


def require_session(request: Request, state: AppState) -> Session:
    """The request's live session, or :class:`SignInRequired`."""
    session = current_session(request, state)
    if session is None:
        expired = COOKIE_NAME in request.cookies
        raise SignInRequired("expired" if expired else "")
    return session


def check_origin(request: Request) -> None:
    """Refuse a state-changing request from another site (see :func:`same_origin`)."""
    host = request.headers.get("host", "")
    if not same_origin(request.headers, request.url.scheme, host):
        raise StudioError(
            403,
            "CrossSiteRequest",
            "This request came from another site: the Studio accepts changes only from its own "
            "pages. Open the Studio and try again.",
        )


def check_csrf(session: Session, given: str | None) -> None:
    if not StudioSessions.csrf_ok(session, given):
        raise StudioError(
            403,
            "InvalidCsrfToken",
            "This form has expired or did not come from this session's pages: reload the page "
            "and try again.",
        )


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind Studio forms send)."""
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        raise StudioError(413, "FormTooLarge", "This form is too large.")
    parsed = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


async def checked_form(request: Request, state: AppState) -> tuple[Session, dict[str, str]]:
    """A signed-in POST from the Studio's own pages with the session's CSRF token."""
    check_origin(request)
    session = require_session(request, state)
    fields = await form_fields(request)
    check_csrf(session, fields.get("csrf"))
    return session, fields


async def checked_json(request: Request, state: AppState) -> dict[str, Any]:
    """A signed-in JSON POST of the playground's script (CSRF token in ``X-CSRF-Token``)."""
    check_origin(request)
    session = sessions(state).find(request.cookies.get(COOKIE_NAME))
    if session is None:
        raise StudioError(401, "SessionExpired", "The Studio session has expired: sign in again.")
    check_csrf(session, request.headers.get("x-csrf-token"))
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise StudioError(400, "InvalidJson", "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise StudioError(400, "InvalidJson", "The request body must be a JSON object.")
    return body


def json_error(exc: StudioError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=SECURITY_HEADERS)
