"""Account keys: generation, keyed digests and constant-time verification.

Keys are 32 hex characters (128 random bits), like Azure's; pinned keys
(``CERULEAN_KEY1``/``KEY2``) are refused below 32 characters unless
``CERULEAN_ALLOW_WEAK_KEYS`` says otherwise (:mod:`cerulean.settings`). Only digests are stored,
and they are **keyed**: ``hmac-sha256:<secret id>:<HMAC-SHA256(server secret, key)>``, so a copy
of the database alone cannot be brute-forced offline for a weak key (the secret lives outside
it: ``CERULEAN_KEY_SECRET`` or ``<home>/key.secret``, see :mod:`cerulean.services.keys`). The
secret id (8 hex characters of a hash of the secret) tells a process that digests were keyed
with another secret. Unkeyed ``sha256:`` digests of earlier versions still verify, and are
replaced by keyed ones as soon as the key is seen (:class:`KeyVerifier` ``upgrades``).
Comparison uses :func:`hmac.compare_digest` against every digest, never stopping early.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "KEYED_PREFIX",
    "KeyVerifier",
    "Verdict",
    "bearer_token",
    "check_credentials",
    "digest_matches",
    "generate_key",
    "hash_key",
    "secret_id",
]

LEGACY_PREFIX = "sha256:"
KEYED_PREFIX = "hmac-sha256:"


def generate_key() -> str:
    """A new account key: 32 lowercase hex characters."""
    return secrets.token_hex(16)


def secret_id(secret: bytes) -> str:
    """A short, one-way name for the server secret (which secret keyed a digest)."""
    return hashlib.sha256(b"cerulean key secret id\x00" + secret).hexdigest()[:8]


def hash_key(key: str, secret: bytes | None = None) -> str:
    """The stored form of ``key``: keyed with ``secret``, else (earlier versions) a plain
    ``sha256:<hex digest>``."""
    if secret is None:
        return LEGACY_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()
    mac = hmac.new(secret, key.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{KEYED_PREFIX}{secret_id(secret)}:{mac}"


def _expected(candidate: str, stored: str, secret: bytes | None) -> str:
    if stored.startswith(KEYED_PREFIX):
        return hash_key(candidate, secret) if secret is not None else ""
    return hash_key(candidate)


def digest_matches(key: str, stored: str | None, secret: bytes | None) -> bool:
    """Whether ``stored`` (keyed or legacy) is the digest of ``key``, in constant time."""
    if stored is None:
        return False
    return hmac.compare_digest(_expected(key, stored, secret), stored)


class KeyVerifier:
    """Holds the digests of the valid keys and checks candidates in constant time.

    ``upgrades`` collects ``{legacy digest: keyed digest}`` for legacy digests that a
    candidate matched, for the key ring to write back (the lazy re-hash).
    """

    def __init__(
        self, digests: Iterable[str] | Mapping[str, str], secret: bytes | None = None
    ) -> None:
        self._digests = _named(digests)
        self.secret = secret
        self.upgrades: dict[str, str] = {}

    def replace(self, digests: Iterable[str] | Mapping[str, str]) -> None:
        """Swap in a new set of valid digests (after a key rotation); a mapping names them
        (``key1``, ``key2``), a sequence names them ``key1``, ``key2``... in order."""
        self._digests = _named(digests)

    def verify(self, candidate: str) -> bool:
        """Whether ``candidate`` is a valid key; compares with every digest, never stops early."""
        return self.matched(candidate) is not None

    def matched(self, candidate: str) -> str | None:
        """The name of the key ``candidate`` is (``key1``, ``key2``), or None; compares with
        every digest, never stops early."""
        legacy = hash_key(candidate)
        keyed = hash_key(candidate, self.secret) if self.secret is not None else ""
        matched: str | None = None
        for name, stored in self._digests:
            is_keyed = stored.startswith(KEYED_PREFIX)
            hit = hmac.compare_digest(keyed if is_keyed else legacy, stored)
            if hit and not is_keyed and self.secret is not None:
                self.upgrades[stored] = keyed
            if hit and matched is None:
                matched = name
        return matched


def _named(digests: Iterable[str] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if isinstance(digests, Mapping):
        return tuple(digests.items())
    return tuple((f"key{i}", digest) for i, digest in enumerate(digests, start=1))


@dataclass(frozen=True)
class Verdict:
    """What the credentials of a request amount to."""

    ok: bool
    api_key_sent: bool
    caller: str | None = None  # the key's name (key1, key2) when ok: usage accounting


def check_credentials(headers: Mapping[str, str], verifier: KeyVerifier) -> Verdict:
    """Azure's rule: ``api-key`` wins when present; otherwise ``Authorization: Bearer <key>``.

    ``headers`` maps lower-case header names to values.
    """
    api_key = headers.get("api-key")
    if api_key is not None:
        name = verifier.matched(api_key.strip())
        return Verdict(ok=name is not None, api_key_sent=True, caller=name)
    token = bearer_token(headers)
    if token is not None:
        name = verifier.matched(token)
        return Verdict(ok=name is not None, api_key_sent=False, caller=name)
    return Verdict(ok=False, api_key_sent=False)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credential of ``Authorization: Bearer <credential>``, if any (stripped)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None
