"""The local token issuer: Entra ID sign-in on a laptop, offline (``cerulean tokens issue``).

Its signing key is an EC P-256 key (ES256) kept in ``<home>/local-issuer.pem``, created mode
``0600`` on first use. Tokens carry ``iss`` :data:`LOCAL_ISSUER`, the given principal as ``oid``
and ``sub``, and the audience asked for (the data plane's by default). A server trusts them only
when told to (``cerulean serve --trust-local-issuer``); its JWKS is :func:`local_jwks`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cerulean.settings import Settings

__all__ = [
    "LOCAL_ISSUER",
    "LOCAL_TENANT",
    "issue_token",
    "local_issuer_file",
    "local_jwks",
    "local_keys",
    "private_key",
]

LOCAL_ISSUER = "urn:cerulean:local-issuer"
LOCAL_TENANT = "00000000-0000-0000-0000-000000000000"
MAX_TTL = 24 * 3600


def local_issuer_file(settings: Settings) -> Path:
    """Where the local issuer's private key lives."""
    return settings.home / "local-issuer.pem"


def private_key(settings: Settings, *, create: bool = True) -> ec.EllipticCurvePrivateKey:
    """The local issuer's signing key, created (``0600``, in a ``0700`` home) if missing."""
    path = local_issuer_file(settings)
    if not path.exists():
        if not create:
            raise FileNotFoundError(path)
        _create(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    core = {name: jwk[name] for name in ("crv", "kty", "x", "y")}  # RFC 7638 thumbprint
    digest = hashlib.sha256(json.dumps(core, separators=(",", ":"), sort_keys=True).encode())
    kid = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    return {**core, "kid": kid, "use": "sig", "alg": "ES256"}


def local_jwks(settings: Settings) -> dict[str, Any]:
    """The local issuer's JWKS document (its public key), creating the key if missing."""
    return {"keys": [_public_jwk(private_key(settings))]}


def local_keys(settings: Settings) -> dict[str, jwt.PyJWK]:
    """The local issuer's public key by ``kid`` (for ``entra.StaticKeys``)."""
    return {jwk["kid"]: jwt.PyJWK(jwk) for jwk in local_jwks(settings)["keys"]}


def issue_token(
    settings: Settings,
    principal: str,
    *,
    ttl: int = 3600,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A token of the local issuer for ``principal`` (its ``oid``), valid ``ttl`` seconds."""
    if not 1 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds")
    if not principal.strip():
        raise ValueError("the principal id is empty")
    key = private_key(settings)
    issued = int(time.time() if now is None else now)
    claims = {
        "aud": audience or settings.entra_audience,
        "iss": LOCAL_ISSUER,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "oid": principal.strip(),
        "sub": principal.strip(),
        "tid": LOCAL_TENANT,
        "uti": uuid.uuid4().hex,
        "ver": "1.0",
    }
    kid = _public_jwk(key)["kid"]
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "JWT"})
