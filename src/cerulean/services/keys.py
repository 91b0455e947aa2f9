"""Provisioning the two account keys (key1, key2).

Sources, in order: ``CERULEAN_KEY1``/``CERULEAN_KEY2`` (injected from a secret store), the digests
already in the store, else a freshly generated key. Only digests are stored, keyed with the
server secret (:func:`load_key_secret`; see :mod:`cerulean.services.auth`). Generated keys are
also written once to ``<home>/keys.json`` (mode 0600) so a later start can print them again, as
the portal shows keys again; ``CERULEAN_WRITE_KEYS_FILE=false`` turns that file off.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from cerulean.errors import ControlError
from cerulean.services.account import local_auth_disabled
from cerulean.services.auth import (
    KEYED_PREFIX,
    KeyVerifier,
    digest_matches,
    generate_key,
    hash_key,
    secret_id,
)
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = [
    "KEY_NAMES",
    "KeyRing",
    "KeySecretMismatch",
    "ProvisionedKeys",
    "key_secret_file",
    "keys_file",
    "load_key_secret",
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


class KeySecretMismatch(RuntimeError):
    """The store's digests were keyed with another server secret than this process's."""


def key_secret_file(settings: Settings) -> Path:
    """Where the generated server secret is kept when ``CERULEAN_KEY_SECRET`` is unset."""
    return settings.home / "key.secret"


def load_key_secret(settings: Settings) -> bytes:
    """The secret that keys the digests: ``CERULEAN_KEY_SECRET``, else ``<home>/key.secret``
    (64 random hex characters, created ``0600`` on first use)."""
    if settings.key_secret is not None:
        return settings.key_secret.get_secret_value().encode("utf-8")
    path = key_secret_file(settings)
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return _read_secret(path)
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return value.encode("utf-8")


def _read_secret(path: Path) -> bytes:
    """The secret in ``path``, waiting a moment for a process that is still writing it."""
    for _ in range(50):
        value = path.read_text().strip()
        if value:
            return value.encode("utf-8")
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: restore it from a backup, or set CERULEAN_KEY_SECRET")


def _check_secret(stored: dict[str, str], secret: bytes) -> None:
    mine = f"{KEYED_PREFIX}{secret_id(secret)}:"
    foreign = [
        n for n, d in stored.items() if d.startswith(KEYED_PREFIX) and not d.startswith(mine)
    ]
    if foreign:
        raise KeySecretMismatch(
            f"the key digests in the store ({', '.join(sorted(foreign))}) were keyed with another "
            "server secret than this process's: every process sharing a database must share "
            "its secret. Set CERULEAN_KEY_SECRET to the same value everywhere (or copy "
            "key.secret from the home of the process that created the store). If that secret "
            "is lost, replace both keys: cerulean keys regenerate key1, then key2 (without "
            "CERULEAN_KEY1/KEY2 set), with this process's settings."
        )


def provision_keys(store: Store, settings: Settings) -> ProvisionedKeys:
    """Make sure both keys exist; return what verifies them and what may be shown.

    Digests of keys whose plaintext is known here (pinned, or in ``keys.json``) are rewritten
    keyed when the store holds an unkeyed one from an earlier version.
    """
    secret = load_key_secret(settings)
    stored = store.key_digests()
    _check_secret(stored, secret)
    from_env = {"key1": settings.key1, "key2": settings.key2}
    shown: dict[str, str] = {}
    generated: dict[str, str] = {}
    for name in KEY_NAMES:
        secret_value = from_env[name]
        if secret_value is not None and secret_value.get_secret_value():
            key = secret_value.get_secret_value()
            shown[name] = key
        elif name in stored:
            continue
        else:
            key = generated[name] = generate_key()
        digest = hash_key(key, secret)
        if stored.get(name) != digest:
            store.set_key_digest(name, digest)
            stored[name] = digest
    path = keys_file(settings)
    if generated and settings.write_keys_file:
        _write_keys_file(path, generated)
    for name, key in _read_keys_file(path).items():
        if name not in shown and digest_matches(key, stored.get(name), secret):
            shown[name] = key
            if not stored[name].startswith(KEYED_PREFIX):  # the lazy re-hash, done now
                stored[name] = hash_key(key, secret)
                store.set_key_digest(name, stored[name])
    for name, key in generated.items():
        shown.setdefault(name, key)
    return ProvisionedKeys(KeyVerifier({n: stored[n] for n in KEY_NAMES}, secret), shown)


def readable_keys(store: Store, settings: Settings) -> dict[str, str]:
    """The keys whose plaintext this process knows (environment, ``keys.json``) and that are
    still valid (their digest is the stored one)."""
    stored = store.key_digests()
    secret = load_key_secret(settings)
    known: dict[str, str] = {}
    from_env = {"key1": settings.key1, "key2": settings.key2}
    for name, key in _read_keys_file(keys_file(settings)).items():
        known[name] = key
    for name, value in from_env.items():
        if value is not None and value.get_secret_value():
            known[name] = value.get_secret_value()
    return {n: k for n, k in known.items() if digest_matches(k, stored.get(n), secret)}


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
    store.set_key_digest(name, hash_key(key, load_key_secret(settings)))
    if settings.write_keys_file:
        _write_keys_file(keys_file(settings), {name: key})
    return key


class KeyRing:
    """A server's copy of the valid key digests, kept fresh from the store.

    The digests are re-read when the copy is older than ``ttl`` seconds (0: before every
    request), and when a key fails (unless a read began after that request asked): a key
    regenerated by another process (the CLI, a second server) works at once and the old one
    stops within ``ttl``. The account's ``disableLocalAuth`` is read with them
    (``local_auth_disabled``). One read at a time, shared by the requests waiting for it, so a flood
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
        self.local_auth_disabled = False  # until the first read (the app's start does one)

    async def refresh(self, *, failed: bool = False) -> bool:
        """Re-read the digests if stale (or after a failure); whether they were re-read.

        Unkeyed digests of earlier versions that a request's key matched are first replaced by
        keyed ones (the lazy re-hash)."""
        if self.verifier.upgrades:
            await self._upgrade()
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

    async def _upgrade(self) -> None:
        upgrades, self.verifier.upgrades = self.verifier.upgrades, {}

        def write() -> None:
            for name, digest in self._store.key_digests().items():
                if digest in upgrades:
                    self._store.set_key_digest(name, upgrades[digest])

        async with self._lock:
            await run_in_threadpool(write)
            await self._read()

    async def _read(self) -> None:
        began = self._clock()
        digests, properties = await run_in_threadpool(self._snapshot)
        self.verifier.replace({n: digests[n] for n in KEY_NAMES if n in digests})
        self.local_auth_disabled = local_auth_disabled(properties)
        self._read_at = began

    def _snapshot(self) -> tuple[dict[str, str], dict[str, str]]:
        return self._store.key_digests(), self._store.account_properties()
