"""Account keys: generation, hashing and constant-time verification.

Keys are 32 hex characters (128 random bits), like Azure's. Because they carry that much entropy,
a single SHA-256 is a sound stored form (a slow password hash defends low-entropy secrets, which
these are not); only the digest is stored, and comparison uses :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "KeyVerifier",
    "Verdict",
    "check_credentials",
    "generate_key",
    "hash_key",
]


def generate_key() -> str:
    """A new account key: 32 lowercase hex characters."""
    return secrets.token_hex(16)


def hash_key(key: str) -> str:
    """The stored form of ``key``: ``sha256:<hex digest>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyVerifier:
    """Holds the digests of the valid keys and checks candidates in constant time."""

    def __init__(self, digests: Iterable[str]) -> None:
        self._digests = tuple(digests)

    def replace(self, digests: Iterable[str]) -> None:
        """Swap in a new set of valid digests (after a key rotation)."""
        self._digests = tuple(digests)

    def verify(self, candidate: str) -> bool:
        """Whether ``candidate`` is a valid key; compares with every digest, never stops early."""
        digest = hash_key(candidate)
        matched = False
        for stored in self._digests:
            matched |= hmac.compare_digest(digest, stored)
        return matched


@dataclass(frozen=True)
class Verdict:
    """What the credentials of a request amount to."""

    ok: bool
    api_key_sent: bool


def check_credentials(headers: Mapping[str, str], verifier: KeyVerifier) -> Verdict:
    """Azure's rule: ``api-key`` wins when present; otherwise ``Authorization: Bearer <key>``.

    ``headers`` maps lower-case header names to values.
    """
    api_key = headers.get("api-key")
    if api_key is not None:
        return Verdict(ok=verifier.verify(api_key.strip()), api_key_sent=True)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Verdict(ok=verifier.verify(token.strip()), api_key_sent=False)
    return Verdict(ok=False, api_key_sent=False)
