"""Provisioning the two account keys (key1, key2).

Sources, in order: ``CERULEAN_KEY1``/``CERULEAN_KEY2`` (injected from a secret store), the digests
already in the store, else a freshly generated key. Only digests are stored. Generated keys are
also written once to ``<home>/keys.json`` (mode 0600) so a later start can print them again, as
the portal shows keys again; ``CERULEAN_WRITE_KEYS_FILE=false`` turns that file off.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cerulean.auth import KeyVerifier, generate_key, hash_key
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = ["KEY_NAMES", "ProvisionedKeys", "keys_file", "provision_keys"]

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
