"""Cerulean Studio's security: the sign-in token, sessions, CSRF tokens and the Origin check.

- **Sign-in** takes the admin token (``CERULEAN_ADMIN_TOKEN``), compared in constant time. With
  no admin token set, the Studio generates its own sign-in token once, ``<home>/studio.token``
  (mode 0600, 64 hex characters), which ``serve`` prints like a generated key: whoever can read
  the data directory can read the database too, so it grants nothing more. It opens the Studio
  only, never the management API.
- **Sessions** live in this process (:class:`StudioSessions`): a random 256-bit id, its CSRF token
  and its expiry, checked on every request (server-side expiry; sign-out forgets the id). The
  cookie carries ``<id>.<HMAC-SHA256(server key, id)>``; the server key is random per process, so
  a restart signs everyone out (sessions are not shared between processes either).
- **CSRF**: every form carries the session's CSRF token (session-bound, compared in constant
  time); the playground's script sends it as ``X-CSRF-Token``. Every state-changing request must
  also come from the Studio's own origin (:func:`same_origin`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cerulean.settings import Settings

__all__ = [
    "COOKIE_NAME",
    "Session",
    "StudioSessions",
    "same_origin",
    "sign_in_secret",
    "studio_token_file",
]

COOKIE_NAME = "cerulean_studio"
_MAX_SESSIONS = 1000  # beyond it the oldest sign-in is dropped (a flood cannot grow memory)


@dataclass(frozen=True)
class SignInSecret:
    """What signs a browser in, and where it comes from (for the banner and the sign-in page)."""

    value: str
    source: str  # "admin-token" or "generated"
    path: Path | None = None


def studio_token_file(settings: Settings) -> Path:
    """Where the generated sign-in token is kept when ``CERULEAN_ADMIN_TOKEN`` is unset."""
    return settings.home / "studio.token"


def sign_in_secret(settings: Settings) -> SignInSecret:
    """The admin token, else the generated ``<home>/studio.token`` (created 0600 on first use)."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return SignInSecret(settings.admin_token.get_secret_value(), "admin-token")
    path = studio_token_file(settings)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
    for _ in range(50):
        value = path.read_text().strip()
        if value:
            return SignInSecret(value, "generated", path)
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: delete it and restart for a new Studio token")


@dataclass(frozen=True)
class Session:
    """One signed-in browser."""

    id: str
    csrf: str
    expires_at: float


class StudioSessions:
    """The signed-in browsers of this process (see the module for the design)."""

    def __init__(
        self,
        secret: SignInSecret,
        *,
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def check_token(self, candidate: str) -> bool:
        """Whether ``candidate`` is the sign-in token (constant time)."""
        expected = hashlib.sha256(self.secret.value.encode()).digest()
        given = hashlib.sha256(candidate.strip().encode()).digest()
        return hmac.compare_digest(expected, given) and bool(candidate.strip())

    def open(self) -> tuple[Session, str]:
        """A new session and its cookie value."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.lifetime)
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= _MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.expires_at)
                del self._sessions[oldest.id]
            self._sessions[session.id] = session
        return session, f"{session.id}.{self._sign(session.id)}"

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names; None when missing, forged, expired or signed out."""
        if not cookie or "." not in cookie:
            return None
        sid, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(self._sign(sid), signature):
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires_at <= self._clock():
                del self._sessions[sid]
                return None
        return session

    def close(self, session: Session) -> None:
        """Sign out: the cookie stops working at once."""
        with self._lock:
            self._sessions.pop(session.id, None)

    def expire_all(self) -> int:
        """End every session now (how many there were)."""
        with self._lock:
            count = len(self._sessions)
            self._sessions.clear()
        return count

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        """Whether a form's (or header's) CSRF token is the session's (constant time)."""
        return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())

    def _sign(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if s.expires_at <= now]:
            del self._sessions[sid]


def same_origin(headers: Mapping[str, str], scheme: str, host: str) -> bool:
    """Whether a state-changing request comes from the Studio's own pages.

    ``Sec-Fetch-Site: cross-site`` (or ``same-site``: another port or subdomain) is refused;
    ``Origin`` (else ``Referer``) must name ``scheme://host``. A request with neither header is
    not a browser's cross-site form post (browsers send ``Origin`` with every cross-origin POST),
    so it passes to the CSRF check alone.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        referer = headers.get("referer")
        if referer is None:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == f"{scheme}://{host}".lower()
