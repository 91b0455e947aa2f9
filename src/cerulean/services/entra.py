"""Microsoft Entra ID bearer tokens: validation against an issuer's signing keys (JWKS).

A token is a JWT signed with RS256 or ES256 (never ``none``, never an HMAC: the allow-list is
:data:`ALGORITHMS`). :class:`TokenValidator` checks, in order: the header (``alg`` allowed, a
``kid``), the ``iss`` (one of the configured issuers), the signature with that issuer's key of
that ``kid``, ``aud``, ``exp`` and ``nbf`` (with ``leeway`` seconds of clock skew). PyJWT does
the JOSE work; this module chooses the key and maps each failure to a :class:`TokenRejected`
reason.

Keys come from a :class:`KeySource`: :class:`JwksKeys` fetches an issuer's JWKS with httpx
(async: the event loop never blocks), keeps it ``ttl`` seconds, fetches again for an unknown
``kid`` (the issuer rotated its keys) at most once per ``refresh_interval``, and **fails
closed**: when the keys are older than ``ttl`` and cannot be fetched, every token of that
issuer is refused. :class:`StaticKeys` holds keys known up front (the local issuer,
:mod:`cerulean.services.local_issuer`).

Tokens are never logged, nor are their claims (only a principal id, where a caller logs it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import jwt

__all__ = [
    "ALGORITHMS",
    "JwksKeys",
    "KeySource",
    "Principal",
    "StaticKeys",
    "TokenRejected",
    "TokenValidator",
    "audience_variants",
    "keys_from_jwks",
    "looks_like_jwt",
]

logger = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
MAX_JWKS_BYTES = 1 << 20  # a JWKS is a few KiB; refuse anything absurd
Reason = Literal["invalid", "expired", "audience", "issuer", "unavailable"]


class TokenRejected(Exception):
    """A bearer token that does not authenticate; ``reason`` says why (never the token)."""

    def __init__(
        self,
        reason: Reason,
        detail: str,
        *,
        claims: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.claims = dict(claims or {})  # unverified: only for wording an error (aud, exp)


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for: ``oid`` (lower case; ``sub`` when there is no ``oid``)."""

    oid: str
    tenant: str | None
    audience: str
    issuer: str


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer credential is a JWT (a JWS in compact form) rather than an account key."""
    return token.startswith("eyJ") and token.count(".") == 2


def audience_variants(audience: str) -> tuple[str, ...]:
    """``audience`` with and without its trailing ``/`` (Entra issues both forms)."""
    bare = audience.rstrip("/")
    return (bare, bare + "/")


class KeySource(Protocol):
    """The signing keys of one issuer, by ``kid``."""

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key ``kid``; raises :class:`TokenRejected` when there is none (or no keys)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def keys_from_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid``.

    Keys without a ``kid``, for encryption (``use: enc``), of another type than RSA or EC, or
    that PyJWT cannot load are left out; a document without a ``keys`` list is a ValueError.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    found: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC"):
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if key.algorithm_name in ALGORITHMS:
            found[entry["kid"]] = key
    return found


class StaticKeys:
    """Keys known up front (the local issuer's public key)."""

    def __init__(self, keys: Mapping[str, jwt.PyJWK]) -> None:
        self._keys = dict(keys)

    async def key(self, kid: str) -> jwt.PyJWK:
        found = self._keys.get(kid)
        if found is None:
            raise TokenRejected("invalid", "unknown signing key (kid)")
        return found

    async def aclose(self) -> None:
        return None


class JwksKeys:
    """An issuer's JWKS, fetched over HTTP(S) and cached (see the module)."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        refresh_interval: float,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._ttl = ttl
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        )
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last fetch that succeeded
        self._tried_at: float | None = None  # the last fetch begun, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # fetches begun (for tests and metrics)

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._ttl

    async def key(self, kid: str) -> jwt.PyJWK:
        found = self._keys.get(kid)
        if found is not None and self._fresh():
            return found  # the hot path: no lock, no I/O
        async with self._lock:
            found = self._keys.get(kid)
            if found is None or not self._fresh():
                await self._maybe_fetch()
            if not self._fresh():
                raise TokenRejected("unavailable", "the issuer's signing keys are unavailable")
            found = self._keys.get(kid)
        if found is None:
            raise TokenRejected("invalid", "unknown signing key (kid)")
        return found

    async def _maybe_fetch(self) -> None:
        now = self._clock()
        if self._tried_at is not None and now - self._tried_at < self._refresh_interval:
            return  # rate limit: a flood of unknown kids costs one fetch per interval
        self._tried_at = now
        self.fetches += 1
        try:
            keys = await self._fetch()
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("could not fetch the JWKS at %s: %s", self.url, exc)
            return
        self._keys = keys
        self._fetched_at = now

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        response = await self._client.get(self.url, headers={"accept": "application/json"})
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("the document is too large")
        return keys_from_jwks(response.json())

    async def aclose(self) -> None:
        await self._client.aclose()


class TokenValidator:
    """Validates bearer tokens of the configured issuers (``{iss: keys}``); see the module."""

    def __init__(self, issuers: Mapping[str, KeySource], *, leeway: float) -> None:
        self.issuers = dict(issuers)
        self._leeway = leeway

    async def validate(self, token: str, audiences: tuple[str, ...]) -> Principal:
        """The principal of ``token`` if it is valid for one of ``audiences``; else raises
        :class:`TokenRejected`."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("invalid", "not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise TokenRejected("invalid", "signing algorithm not allowed", claims=unverified)
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("invalid", "no signing key id (kid)", claims=unverified)
        issuer = unverified.get("iss")
        source = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if source is None or not isinstance(issuer, str):
            raise TokenRejected("issuer", "issuer not trusted", claims=unverified)
        key = await source.key(kid)
        if key.algorithm_name != alg:
            raise TokenRejected("invalid", "algorithm does not match the key", claims=unverified)
        claims = self._verified(token, key, alg, audiences, issuer, unverified)
        oid = claims.get("oid") or claims.get("sub")
        if not isinstance(oid, str) or not oid.strip():
            raise TokenRejected("invalid", "no principal (oid or sub)", claims=unverified)
        tenant = claims.get("tid")
        aud = claims["aud"]
        return Principal(
            oid=oid.strip().lower(),
            tenant=tenant if isinstance(tenant, str) else None,
            audience=aud if isinstance(aud, str) else str(aud[0]),
            issuer=issuer,
        )

    def _verified(
        self,
        token: str,
        key: jwt.PyJWK,
        alg: str,
        audiences: tuple[str, ...],
        issuer: str,
        unverified: Mapping[str, Any],
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", "the token has expired", claims=unverified) from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("audience", "wrong audience", claims=unverified) from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected(
                "invalid", "the token is not valid yet", claims=unverified
            ) from None
        except jwt.PyJWTError:
            raise TokenRejected(
                "invalid", "signature or claims invalid", claims=unverified
            ) from None
        return claims

    async def aclose(self) -> None:
        for source in self.issuers.values():
            await source.aclose()
