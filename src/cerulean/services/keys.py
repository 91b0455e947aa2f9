"""Provisioning the two account keys (key1, key2).

Sources, in order: ``CERULEAN_KEY1``/``CERULEAN_KEY2`` (injected from a secret store), the digests
already in the store, else a freshly generated key. Only digests are stored. Generated keys are
also written once to ``<home>/keys.json`` (mode 0600) so a later start can print them again, as
the portal shows keys again; ``CERULEAN_WRITE_KEYS_FILE=false`` turns that file off.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from cerulean.errors import ControlError
from cerulean.services.auth import KeyVerifier, generate_key, hash_key
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = [
    "KEY_NAMES",
    "KeyRing",
    "ProvisionedKeys",
    "keys_file",
    "mask_key",
    "provision_keys",
    "readable_keys",
    "regenerate_key",
]

KEY_NAMES = ("key1", "key2")


@dataclass(frozen=True)
class ProvisionedKeys:
    """The valid keys' verifier, and the plaintext keys this process may show (if known)."""

    verifier: KeyVerifier
    shown: dict[str, str]


def keys_file(settings: Settings) -> Path:
    """Where generated keys are kept for display."""
    return settings.home / "keys.json"


def _read_keys_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if k in KEY_NAMES and isinstance(v, str)}


def _write_keys_file(path: Path, keys: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**_read_keys_file(path), **keys}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(merged, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def provision_keys(store: Store, settings: Settings) -> ProvisionedKeys:
    """Make sure both keys exist; return what verifies them and what may be shown."""
    stored = store.key_digests()
    from_env = {"key1": settings.key1, "key2": settings.key2}
    shown: dict[str, str] = {}
    generated: dict[str, str] = {}
    for name in KEY_NAMES:
        secret = from_env[name]
        if secret is not None and secret.get_secret_value():
            key = secret.get_secret_value()
            shown[name] = key
        elif name in stored:
            continue
        else:
            key = generated[name] = generate_key()
        digest = hash_key(key)
        if stored.get(name) != digest:
            store.set_key_digest(name, digest)
            stored[name] = digest
    path = keys_file(settings)
    if generated and settings.write_keys_file:
        _write_keys_file(path, generated)
    for name, key in _read_keys_file(path).items():
        if name not in shown and hash_key(key) == stored.get(name):
            shown[name] = key
    for name, key in generated.items():
        shown.setdefault(name, key)
    return ProvisionedKeys(KeyVerifier(stored[n] for n in KEY_NAMES), shown)


def readable_keys(store: Store, settings: Settings) -> dict[str, str]:
    """The keys whose plaintext this process knows (environment, ``keys.json``) and that are
    still valid (their digest is the stored one)."""
    stored = store.key_digests()
    known: dict[str, str] = {}
    from_env = {"key1": settings.key1, "key2": settings.key2}
    for name, key in _read_keys_file(keys_file(settings)).items():
        known[name] = key
    for name, secret in from_env.items():
        if secret is not None and secret.get_secret_value():
            known[name] = secret.get_secret_value()
    return {name: key for name, key in known.items() if stored.get(name) == hash_key(key)}


def mask_key(key: str) -> str:
    """The first four characters and ``****``: enough to tell keys apart, useless to attackers."""
    return key[:4] + "****"


def regenerate_key(store: Store, settings: Settings, name: str) -> str:
    """Replace account key ``name`` (``key1``/``key2``) with a new one and return it.

    The old key stops verifying as soon as a server re-reads the digests (see :class:`KeyRing`);
    the other key keeps working, so clients switch to it first. A key pinned by
    ``CERULEAN_KEY1``/``KEY2`` is refused: the next start would put the pinned value back.
    """
    name = name.lower()
    if name not in KEY_NAMES:
        raise ControlError(
            f"'{name}' is not a key name: use key1 or key2",
            reason="invalid",
            code="InvalidKeyName",
        )
    pinned = settings.key1 if name == "key1" else settings.key2
    if pinned is not None and pinned.get_secret_value():
        raise ControlError(
            f"{name} is set by CERULEAN_{name.upper()}; change that variable (and restart) "
            "to rotate it",
            reason="conflict",
            code="Conflict",
        )
    key = generate_key()
    store.set_key_digest(name, hash_key(key))
    if settings.write_keys_file:
        _write_keys_file(keys_file(settings), {name: key})
    return key


class KeyRing:
    """A server's copy of the valid key digests, kept fresh from the store.

    The digests are re-read when the copy is older than ``ttl`` seconds (0: before every
    request), and when a key fails (unless a read began after that request asked): a key
    regenerated by another process (the CLI, a second server) works at once and the old one
    stops within ``ttl``. One read at a time, shared by the requests waiting for it, so a flood
    of wrong keys costs at most one small query in flight (``retry_interval`` can space them).
    """

    def __init__(
        self,
        verifier: KeyVerifier,
        store: Store,
        *,
        ttl: float,
        retry_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verifier = verifier
        self._store = store
        self._ttl = ttl
        self._retry_interval = retry_interval
        self._clock = clock
        self._read_at = clock()
        self._lock = asyncio.Lock()

    async def refresh(self, *, failed: bool = False) -> bool:
        """Re-read the digests if stale (or after a failure); whether they were re-read."""
        limit = self._retry_interval if failed else self._ttl
        asked = self._clock()
        if asked - self._read_at < limit:
            return False
        async with self._lock:
            if self._read_at > asked:
                return True  # a read that began after this request asked: fresh enough
            await self._read()
        return True

    async def reload(self) -> None:
        """Re-read the digests now (after this process changed a key)."""
        async with self._lock:
            await self._read()

    async def _read(self) -> None:
        began = self._clock()
        digests = await run_in_threadpool(self._store.key_digests)
        self.verifier.replace(digests[n] for n in KEY_NAMES if n in digests)
        self._read_at = began
