"""Property-based fuzz of the content-filter ARM routes (raiPolicies, raiBlocklists,
raiBlocklistItems, the batch operations), in-process: any body, name or pattern gets an answer
that is not a 5xx and is ARM-shaped; a stored pattern never stalls or breaks the data plane."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from tests.conformance.fuzz import fuzz_settings
from tests.conftest import KEY1

ADMIN = "admin-token-for-fuzz-0123456789ab"
ACCOUNT = (
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/cerulean"
)
V = "?api-version=2024-10-01"
CHAT = "/openai/deployments/gpt-35-turbo/chat/completions?api-version=2024-10-21"

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FILTER = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(
            ["Hate", "Sexual", "Violence", "Selfharm", "Jailbreak", "Profanity", "x"]
        )
        | st.text(max_size=10),
        "enabled": st.booleans() | JSON,
        "severityThreshold": st.sampled_from(["Low", "Medium", "High", "None"]) | JSON,
        "blocking": st.booleans(),
        "source": st.sampled_from(["Prompt", "Completion", "Other"]),
    },
)
POLICY = st.fixed_dictionaries(
    {},
    optional={
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "mode": st.sampled_from(
                    ["Default", "Deferred", "Blocking", "Asynchronous_filter", "x"]
                ),
                "basePolicyName": st.sampled_from(
                    ["Microsoft.DefaultV2", "Microsoft.Default", "nope"]
                ),
                "contentFilters": st.lists(FILTER, max_size=4) | JSON,
                "customBlocklists": st.lists(
                    st.fixed_dictionaries(
                        {"blocklistName": st.sampled_from(["fz", "missing"]) | st.text(max_size=8)},
                        optional={
                            "blocking": st.booleans(),
                            "source": st.sampled_from(["Prompt", "Completion"]),
                        },
                    ),
                    max_size=2,
                )
                | JSON,
            },
        )
        | JSON
    },
)
NAME = st.sampled_from(
    ["fz", "p1", "Microsoft.DefaultV2", "a" * 200, "bad name", "%2e%2e", "é"]
) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%\\"),
    min_size=1,
    max_size=12,
)
PATTERN = st.text(max_size=40) | st.sampled_from(
    [r"(a+)+$", r"(a)\1", "(?=x)", "[", "x" * 1001, r"\p{L}+"]
)


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = Path(tmp_path_factory.mktemp("fuzzrai")) / "home"
    settings = Settings(home=home, key1=KEY1, admin_token=ADMIN)  # type: ignore[arg-type]
    app = create_app(settings, {"fake-model": FakeEngine(context_length=4096)})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["authorization"] = f"Bearer {ADMIN}"
        assert client.put(
            f"{ACCOUNT}/raiBlocklists/fz{V}", json={"properties": {}}
        ).status_code in (200, 201)
        yield client


def check(response: Any) -> None:
    assert response.status_code < 500, response.text[:400]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


def data_plane_works(client: TestClient) -> None:
    started = time.monotonic()
    response = client.post(
        CHAT,
        json={"messages": [{"role": "user", "content": "a" * 3000 + "!"}], "max_tokens": 2},
        headers={"api-key": KEY1, "authorization": ""},
    )
    assert response.status_code in (200, 400), response.text[:400]
    assert time.monotonic() - started < 5


@fuzz_settings(40)
@given(name=NAME, body=POLICY | JSON)
def test_policy_bodies(arm: TestClient, name: str, body: Any) -> None:
    check(arm.put(f"{ACCOUNT}/raiPolicies/{name}{V}", content=json.dumps(body)))
    check(arm.get(f"{ACCOUNT}/raiPolicies/{name}{V}"))
    deployment = arm.get(f"{ACCOUNT}/deployments/gpt-35-turbo{V}").json()
    deployment["properties"]["raiPolicyName"] = name
    check(arm.put(f"{ACCOUNT}/deployments/gpt-35-turbo{V}", json=deployment))
    data_plane_works(arm)
    check(arm.delete(f"{ACCOUNT}/raiPolicies/{name}{V}"))


@fuzz_settings(50)
@given(name=NAME, pattern=PATTERN, regex=st.booleans() | JSON, extra=JSON)
def test_blocklist_items(arm: TestClient, name: str, pattern: str, regex: Any, extra: Any) -> None:
    body = {"properties": {"pattern": pattern, "isRegex": regex}, "x": extra}
    check(arm.put(f"{ACCOUNT}/raiBlocklists/fz/raiBlocklistItems/{name}{V}", json=body))
    check(arm.get(f"{ACCOUNT}/raiBlocklists/fz/raiBlocklistItems{V}"))
    policy = {"properties": {"customBlocklists": [{"blocklistName": "fz", "blocking": True}]}}
    check(arm.put(f"{ACCOUNT}/raiPolicies/fzp{V}", json=policy))
    deployment = arm.get(f"{ACCOUNT}/deployments/gpt-35-turbo{V}").json()
    deployment["properties"]["raiPolicyName"] = "fzp"
    check(arm.put(f"{ACCOUNT}/deployments/gpt-35-turbo{V}", json=deployment))
    data_plane_works(arm)
    check(arm.delete(f"{ACCOUNT}/raiBlocklists/fz/raiBlocklistItems/{name}{V}"))


@fuzz_settings(40)
@given(name=NAME, body=JSON, raw=st.binary(max_size=40))
def test_blocklists_and_batches(arm: TestClient, name: str, body: Any, raw: bytes) -> None:
    check(arm.put(f"{ACCOUNT}/raiBlocklists/{name}{V}", content=json.dumps(body)))
    check(arm.put(f"{ACCOUNT}/raiBlocklists/{name}{V}", content=raw))
    check(
        arm.post(
            f"{ACCOUNT}/raiBlocklists/{name}/addRaiBlocklistItems{V}", content=json.dumps(body)
        )
    )
    check(arm.post(f"{ACCOUNT}/raiBlocklists/{name}/deleteRaiBlocklistItems{V}", content=raw))
    check(arm.delete(f"{ACCOUNT}/raiBlocklists/{name}{V}"))
