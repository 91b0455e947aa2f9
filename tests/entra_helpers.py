"""A real token issuer for the Entra ID tests: signing keys (RS256 and ES256), tokens with any
claims or header, and a JWKS served over HTTP on loopback that can rotate and go down."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "https://cognitiveservices.azure.com"
MANAGEMENT = "https://management.azure.com"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = f"https://sts.windows.net/{TENANT}/"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        )
        public: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}


def new_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    private: Any
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(kid or uuid.uuid4().hex[:16], alg, private)


@dataclass
class Issuer:
    """Signing keys (the published ones in ``keys``) and a token factory."""

    issuer: str = ISSUER
    keys: list[SigningKey] = field(default_factory=lambda: [new_key("RS256"), new_key("ES256")])

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def token(
        self,
        oid: str,
        *,
        audience: str = AUDIENCE,
        ttl: int = 600,
        key: SigningKey | None = None,
        issuer: str | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        signer = key or self.keys[0]
        now = int(time.time())
        body = {
            "aud": audience,
            "iss": issuer or self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "oid": oid,
            "sub": oid,
            "tid": TENANT,
            **claims,
        }
        header = {"kid": signer.kid, **(headers or {})}
        return jwt.encode(body, signer.private, algorithm=signer.alg, headers=header)


def unsigned_token(oid: str, *, kid: str = "any", audience: str = AUDIENCE) -> str:
    """An ``alg: none`` token (which must never be accepted)."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": audience, "iss": ISSUER, "exp": now + 600, "nbf": now, "oid": oid}
    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


class JwksServer:
    """The issuer's JWKS on ``http://127.0.0.1:<port>/keys``; ``down`` answers 503."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer
        self.down = False
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.down or self.path != "/keys":
                    self.send_response(503 if owner.down else 404)
                    self.end_headers()
                    return
                body = json.dumps(owner.issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/keys"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
