"""`cerulean roles | tokens | account`, in-process with click's runner."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import jwt
from click.testing import CliRunner, Result

from cerulean.cli import main

OID = "6F1C5D2A-0000-4000-8000-0000000000AA"


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def test_roles_assign_list_remove(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "roles", "list").exit_code == 1  # no data directory yet: says where
    assigned = run(home, "roles", "assign", OID, "cognitive services openai user")
    assert assigned.exit_code == 0, assigned.output
    assert f"{OID.lower()} now holds 'Cognitive Services OpenAI User'" in assigned.output
    again = run(home, "roles", "assign", OID, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd")
    assert "already held" in again.output
    listed = json.loads(run(home, "roles", "list", "--json").output)
    assert [(r["principalId"], r["roleDefinitionName"]) for r in listed] == [
        (OID.lower(), "Cognitive Services OpenAI User")
    ]
    unknown = run(home, "roles", "assign", OID, "Owner")
    assert unknown.exit_code == 1 and "is not a role Cerulean knows" in unknown.output
    blank = run(home, "roles", "assign", "two words", "Cognitive Services Contributor")
    assert blank.exit_code == 1 and "is not a principal id" in blank.output
    assert run(home, "roles", "remove", OID, "Cognitive Services OpenAI User").exit_code == 0
    missing = run(home, "roles", "remove", OID, "Cognitive Services OpenAI User")
    assert missing.exit_code == 1 and "does not hold" in missing.output
    assert "No role assignments yet" in run(home, "roles", "list").output
    definitions = json.loads(run(home, "roles", "list", "--definitions", "--json").output)
    assert len(definitions) == 3


def test_tokens_issue_and_jwks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    issued = run(home, "tokens", "issue", "--principal", OID, "--ttl", "120")
    assert issued.exit_code == 0, issued.output
    token = issued.output.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["oid"] == OID and claims["aud"] == "https://cognitiveservices.azure.com"
    assert claims["exp"] - claims["iat"] == 120
    key = home / "local-issuer.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    jwks = json.loads(run(home, "tokens", "jwks").output)
    public = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    verified = jwt.decode(token, public.key, algorithms=["ES256"], audience=claims["aud"])
    assert verified["sub"] == OID
    assert "d" not in jwks["keys"][0]  # the public half only
    management = run(
        home, "tokens", "issue", "--principal", OID, "--audience", "https://management.azure.com"
    )
    assert jwt.decode(management.output.strip(), options={"verify_signature": False})["aud"] == (
        "https://management.azure.com"
    )
    assert run(home, "tokens", "issue", "--principal", OID, "--ttl", "0").exit_code == 2


def test_account_update_and_show(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "account", "update", "--disable-local-auth").exit_code == 0
    shown = json.loads(run(home, "account", "show", "--json").output)
    assert shown == {"disableLocalAuth": True}
    assert run(home, "account", "update", "--enable-local-auth").exit_code == 0
    assert "disableLocalAuth: false" in run(home, "account", "show").output
    assert run(home, "account", "update").exit_code == 2  # one of the two flags is required
