"""The Entra ID token validator, the JWKS cache, the local issuer and the RBAC mapping, against
a real JWKS served on loopback (tests/entra_helpers.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from cerulean.services.entra import (
    JwksKeys,
    StaticKeys,
    TokenRejected,
    TokenValidator,
    audience_variants,
    keys_from_jwks,
    looks_like_jwt,
)
from cerulean.services.local_issuer import LOCAL_ISSUER, issue_token, local_issuer_file, local_keys
from cerulean.services.rbac import ROLES, arm_action, data_action, find_role
from cerulean.settings import Settings
from tests.entra_helpers import AUDIENCE, ISSUER, Issuer, JwksServer, new_key, unsigned_token

OID = "6F1C5D2A-0000-4000-8000-000000000001"
AUDIENCES = audience_variants(AUDIENCE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def jwks(issuer: Issuer) -> Iterator[JwksServer]:
    with JwksServer(issuer) as server:
        yield server


def validator_for(
    url: str, clock: Clock, *, ttl: float = 60, interval: float = 5
) -> TokenValidator:
    keys = JwksKeys(url, ttl=ttl, refresh_interval=interval, clock=clock)
    return TokenValidator({ISSUER: keys}, leeway=30)


def rejected(validator: TokenValidator, token: str, audiences: tuple[str, ...] = AUDIENCES) -> str:
    async def run() -> str:
        try:
            await validator.validate(token, audiences)
        except TokenRejected as exc:
            return exc.reason
        finally:
            await validator.aclose()
        return "accepted"

    return asyncio.run(run())


def test_rs256_and_es256_tokens_are_accepted(issuer: Issuer, jwks: JwksServer) -> None:
    async def run() -> None:
        validator = validator_for(jwks.url, Clock())
        for key in issuer.keys:
            principal = await validator.validate(issuer.token(OID, key=key), AUDIENCES)
            assert principal.oid == OID.lower()
            assert principal.issuer == ISSUER
        slash = await validator.validate(issuer.token(OID, audience=AUDIENCE + "/"), AUDIENCES)
        assert slash.oid == OID.lower()
        await validator.aclose()

    asyncio.run(run())
    assert jwks.hits == 1  # one fetch serves both keys


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "expired"),
        ("expired within the skew", "accepted"),
        ("not yet valid", "invalid"),
        ("wrong audience", "audience"),
        ("wrong issuer", "issuer"),
        ("bad signature", "invalid"),
        ("alg none", "invalid"),
        ("hs256 with the public key", "invalid"),
        ("unknown kid", "invalid"),
        ("no kid", "invalid"),
        ("no oid or sub", "invalid"),
        ("not a jwt", "invalid"),
    ],
)
def test_bad_tokens_are_rejected(issuer: Issuer, jwks: JwksServer, case: str, reason: str) -> None:
    key = issuer.keys[0]
    tokens = {
        "expired": lambda: issuer.token(OID, ttl=-120),
        "expired within the skew": lambda: issuer.token(OID, ttl=-10),
        "not yet valid": lambda: issuer.token(OID, nbf=int(__import__("time").time()) + 600),
        "wrong audience": lambda: issuer.token(OID, audience="https://management.azure.com"),
        "wrong issuer": lambda: issuer.token(OID, issuer="https://sts.windows.net/other/"),
        "bad signature": lambda: issuer.token(OID, key=_same_kid_other_key(key.kid)),
        "alg none": lambda: unsigned_token(OID, kid=key.kid),
        "hs256 with the public key": lambda: _hs256_confusion(issuer),
        "unknown kid": lambda: issuer.token(OID, key=new_key("RS256")),
        "no kid": lambda: jwt.encode(
            {"aud": AUDIENCE, "iss": ISSUER, "exp": 2**31, "oid": OID}, key.private, "RS256"
        ),
        "no oid or sub": lambda: issuer.token("", sub=""),
        "not a jwt": lambda: "eyJ.not.ajwt",
    }
    assert rejected(validator_for(jwks.url, Clock()), tokens[case]()) == reason


def _same_kid_other_key(kid: str) -> object:
    return new_key("RS256", kid=kid)


def _hs256_confusion(issuer: Issuer) -> str:
    # The classic attack: an HMAC "signed" with the RSA public key's bytes.
    header = {"alg": "HS256", "kid": issuer.keys[0].kid}
    payload = {"aud": AUDIENCE, "iss": ISSUER, "exp": 2**31, "oid": OID}
    import base64
    import hashlib
    import hmac
    import json

    def part(value: dict[str, object]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing = part(header) + b"." + part(payload)
    secret = json.dumps(issuer.keys[0].jwk()).encode()
    signature = base64.urlsafe_b64encode(hmac.new(secret, signing, hashlib.sha256).digest())
    return (signing + b"." + signature.rstrip(b"=")).decode()


def test_an_unknown_kid_refetches_at_most_once_per_interval(
    issuer: Issuer, jwks: JwksServer
) -> None:
    clock = Clock()

    async def run() -> None:
        validator = validator_for(jwks.url, clock, interval=5)
        await validator.validate(issuer.token(OID), AUDIENCES)
        assert jwks.hits == 1
        stranger = new_key("RS256")
        with pytest.raises(TokenRejected):  # just fetched: no refetch yet
            await validator.validate(issuer.token(OID, key=stranger), AUDIENCES)
        assert jwks.hits == 1
        clock.now += 5
        for _ in range(20):  # a flood of unknown kids
            with pytest.raises(TokenRejected):
                await validator.validate(issuer.token(OID, key=stranger), AUDIENCES)
        assert jwks.hits == 2  # one refetch, then the rate limit
        rotated = new_key("ES256")
        issuer.keys.append(rotated)  # the issuer rotates: a new key is published
        with pytest.raises(TokenRejected):  # still inside the interval
            await validator.validate(issuer.token(OID, key=rotated), AUDIENCES)
        clock.now += 5
        principal = await validator.validate(issuer.token(OID, key=rotated), AUDIENCES)
        assert principal.oid == OID.lower() and jwks.hits == 3
        old = issuer.keys.pop(0)  # the old key is withdrawn: after the ttl its tokens stop
        await validator.validate(issuer.token(OID, key=old), AUDIENCES)  # cached meanwhile
        clock.now += 61
        with pytest.raises(TokenRejected):
            await validator.validate(issuer.token(OID, key=old), AUDIENCES)
        assert jwks.hits == 4
        await validator.aclose()

    asyncio.run(run())


def test_fails_closed_when_the_jwks_cannot_be_fetched(issuer: Issuer, jwks: JwksServer) -> None:
    clock = Clock()

    async def run() -> None:
        validator = validator_for(jwks.url, clock, ttl=60, interval=0)
        jwks.down = True
        with pytest.raises(TokenRejected) as never_fetched:
            await validator.validate(issuer.token(OID), AUDIENCES)
        assert never_fetched.value.reason == "unavailable"
        jwks.down = False
        await validator.validate(issuer.token(OID), AUDIENCES)
        jwks.down = True
        clock.now += 30  # the cached keys still serve within their ttl
        await validator.validate(issuer.token(OID), AUDIENCES)
        clock.now += 31  # past the ttl, the JWKS cannot be fetched: refused
        with pytest.raises(TokenRejected) as stale:
            await validator.validate(issuer.token(OID), AUDIENCES)
        assert stale.value.reason == "unavailable"
        await validator.aclose()

    asyncio.run(run())


def test_an_unreachable_jwks_fails_closed() -> None:
    validator = validator_for("http://127.0.0.1:9/keys", Clock())
    assert rejected(validator, Issuer().token(OID)) == "unavailable"


def test_keys_from_jwks_keeps_only_usable_signing_keys(issuer: Issuer) -> None:
    good = issuer.jwks()["keys"]
    document = {
        "keys": [
            *good,
            {"kty": "RSA", "kid": "broken", "n": "AQAB", "e": "x"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**good[0], "kid": "enc", "use": "enc"},
            {"kty": "RSA"},
            "junk",
        ]
    }
    assert set(keys_from_jwks(document)) == {key.kid for key in issuer.keys}
    with pytest.raises(ValueError):
        keys_from_jwks({"no": "keys"})


def test_looks_like_jwt() -> None:
    assert looks_like_jwt(Issuer().token(OID))
    assert not looks_like_jwt("0123456789abcdef0123456789abcdef")
    assert not looks_like_jwt("eyJabc")


def test_local_issuer_key_is_private_and_its_tokens_validate(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", trust_local_issuer=True)
    token = issue_token(settings, OID, ttl=60)
    path = local_issuer_file(settings)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    validator = TokenValidator({LOCAL_ISSUER: StaticKeys(local_keys(settings))}, leeway=0)
    principal = asyncio.run(validator.validate(token, AUDIENCES))
    assert principal.oid == OID.lower()
    again = issue_token(settings, OID, ttl=60, audience="https://management.azure.com")
    assert rejected(validator, again) == "audience"  # same key, other audience
    other = Settings(home=tmp_path / "other")
    assert rejected(validator, issue_token(other, OID)) == "invalid"  # another home's key
    with pytest.raises(ValueError):
        issue_token(settings, OID, ttl=0)


def test_settings_refuse_an_unsafe_jwks_url() -> None:
    with pytest.raises(ValidationError):
        Settings(entra_issuer=ISSUER, entra_jwks_url="http://issuer.example/keys")
    with pytest.raises(ValidationError):
        Settings(entra_issuer=ISSUER)  # an issuer without its keys
    for url in ("https://login.microsoftonline.com/t/discovery/v2.0/keys", "http://[::1]:9/k"):
        assert Settings(entra_issuer=ISSUER, entra_jwks_url=url).entra_jwks_url == url
    both = Settings(
        entra_issuer=f"{ISSUER}, https://login.microsoftonline.com/t/v2.0",
        entra_jwks_url="http://localhost:1/k",
    )
    assert both.entra_issuers == (ISSUER, "https://login.microsoftonline.com/t/v2.0")


@pytest.mark.parametrize(
    ("method", "path", "action", "operation"),
    [
        (
            "POST",
            "/openai/deployments/gpt-4o/chat/completions",
            "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
            "POST /openai/deployments/{deployment-id}/chat/completions",
        ),
        (
            "POST",
            "/openai/deployments/ada/embeddings",
            "Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action",
            "POST /openai/deployments/{deployment-id}/embeddings",
        ),
        (
            "POST",
            "/openai/v1/chat/completions",
            "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
            "POST /openai/v1/chat/completions",
        ),
        (
            "GET",
            "/openai/v1/models",
            "Microsoft.CognitiveServices/accounts/OpenAI/models/read",
            "GET /openai/v1/models",
        ),
        (
            "GET",
            "/openai/deployments/gpt-4o",
            "Microsoft.CognitiveServices/accounts/OpenAI/deployments/read",
            "GET /openai/deployments/{deployment-id}",
        ),
        (
            "POST",
            "/openai/files",
            "Microsoft.CognitiveServices/accounts/OpenAI/files/action",
            "POST /openai/files",
        ),
    ],
)
def test_data_actions(method: str, path: str, action: str, operation: str) -> None:
    assert data_action(method, path) == (action, operation)


def test_roles_permit_what_azure_says() -> None:
    user = find_role("cognitive services openai user")
    contributor = find_role("a001fd3d-188f-4b5d-821b-7da978bf7442")
    services = find_role("Cognitive Services Contributor")
    chat, _ = data_action("POST", "/openai/deployments/x/chat/completions")
    upload, _ = data_action("POST", "/openai/files")
    assert user.permits(chat, data=True) and contributor.permits(chat, data=True)
    assert not services.permits(chat, data=True)  # no Entra inference
    assert contributor.permits(upload, data=True) and not user.permits(upload, data=True)
    put = arm_action("PUT", "/deployments/gpt-4o")
    keys = arm_action("POST", "/listKeys")
    assert put == "Microsoft.CognitiveServices/accounts/deployments/write"
    assert keys == "Microsoft.CognitiveServices/accounts/listKeys/action"
    assert arm_action("PATCH", "") == "Microsoft.CognitiveServices/accounts/write"
    assert arm_action("DELETE", "/raiBlocklists/b/raiBlocklistItems/i") == (
        "Microsoft.CognitiveServices/accounts/raiBlocklists/raiBlocklistItems/delete"
    )
    assert services.permits(keys, data=False) and services.permits(put, data=False)
    assert contributor.permits(put, data=False) and not contributor.permits(keys, data=False)
    assert user.permits(arm_action("GET", "/deployments"), data=False)
    assert not user.permits(put, data=False)
    assert len({r.id for r in ROLES}) == 3
