"""Content filtering against a real server (the real model and the packaged embedding model):
policies and blocklists made with Microsoft's azure-mgmt-cognitiveservices, then openai 1.x
sees Azure's 400 for a blocked prompt, withheld completions in JSON and in both streaming
modes, a jailbreak from the labelled set detected, and annotations the harm classifier made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import (
    CustomBlocklistConfig,
    Deployment,
    DeploymentModel,
    DeploymentProperties,
    RaiBlocklist,
    RaiBlocklistItem,
    RaiBlocklistItemBulkRequest,
    RaiBlocklistItemProperties,
    RaiBlocklistProperties,
    RaiPolicy,
    RaiPolicyContentFilter,
    RaiPolicyProperties,
    Sku,
)
from openai import AzureOpenAI

from tests.e2e.conftest import Server
from tests.e2e.test_control_plane import ADMIN_TOKEN, GROUP, HTTP, SUBSCRIPTION, StaticToken

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "data" / "content_filter" / "eval.jsonl"
ACCOUNT = "cerulean"


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CERULEAN_ADMIN_TOKEN": ADMIN_TOKEN}
    server = Server(home=tmp_path_factory.mktemp("filter") / "home", env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sdk(filtered: Server) -> CognitiveServicesManagementClient:
    return CognitiveServicesManagementClient(
        StaticToken(ADMIN_TOKEN),  # type: ignore[arg-type]
        SUBSCRIPTION,
        base_url=filtered.endpoint.rstrip("/"),
    )


def deploy(sdk: CognitiveServicesManagementClient, name: str, policy: str) -> None:
    body = Deployment(
        sku=Sku(name="Standard", capacity=100),
        properties=DeploymentProperties(
            model=DeploymentModel(format="OpenAI", name="gemma-3-270m", version="q4_k_m"),
            rai_policy_name=policy,
        ),
    )
    made = sdk.deployments.begin_create_or_update(GROUP, ACCOUNT, name, body, **HTTP).result()
    assert made.properties.rai_policy_name == policy


@pytest.fixture(scope="module")
def policies(sdk: CognitiveServicesManagementClient) -> None:
    """Blocklist ``words`` (prompt side) and ``anything`` (completion side: any letter), in
    policies ``prompt-words`` and ``withheld`` / ``withheld-async``, on three deployments."""
    lists = sdk.rai_blocklists
    made = lists.create_or_update(
        GROUP,
        ACCOUNT,
        "words",
        RaiBlocklist(properties=RaiBlocklistProperties(description="x")),
        **HTTP,
    )
    assert made.name == "words" and made.properties.description == "x"
    items = sdk.rai_blocklist_items
    item = items.create_or_update(
        GROUP,
        ACCOUNT,
        "words",
        "w1",
        RaiBlocklistItem(properties=RaiBlocklistItemProperties(pattern="zanzibar", is_regex=False)),
        **HTTP,
    )
    assert item.properties.pattern == "zanzibar" and item.properties.is_regex is False
    items.batch_add(
        GROUP,
        ACCOUNT,
        "words",
        [
            RaiBlocklistItemBulkRequest(
                name="w2",
                properties=RaiBlocklistItemProperties(pattern=r"qu[io]xote\d*", is_regex=True),
            )
        ],
        **HTTP,
    )
    assert {i.name for i in items.list(GROUP, ACCOUNT, "words", **HTTP)} == {"w1", "w2"}
    lists.create_or_update(
        GROUP, ACCOUNT, "anything", RaiBlocklist(properties=RaiBlocklistProperties()), **HTTP
    )
    items.create_or_update(
        GROUP,
        ACCOUNT,
        "anything",
        "letters",
        RaiBlocklistItem(properties=RaiBlocklistItemProperties(pattern=r"[A-Za-z]", is_regex=True)),
        **HTTP,
    )
    prompt_side = RaiPolicyProperties(
        base_policy_name="Microsoft.DefaultV2",
        content_filters=[
            RaiPolicyContentFilter(
                name="Hate",
                enabled=True,
                severity_threshold="Medium",
                blocking=True,
                source="Prompt",
            )
        ],
        custom_blocklists=[
            CustomBlocklistConfig(blocklist_name="words", blocking=True, source="Prompt")
        ],
    )
    policy = sdk.rai_policies.create_or_update(
        GROUP, ACCOUNT, "prompt-words", RaiPolicy(properties=prompt_side), **HTTP
    )
    assert policy.properties.custom_blocklists[0].blocklist_name == "words"
    for name, mode in (("withheld", "Default"), ("withheld-async", "Asynchronous_filter")):
        props = RaiPolicyProperties(
            mode=mode,
            base_policy_name="Microsoft.DefaultV2",
            custom_blocklists=[
                CustomBlocklistConfig(blocklist_name="anything", blocking=True, source="Completion")
            ],
        )
        sdk.rai_policies.create_or_update(GROUP, ACCOUNT, name, RaiPolicy(properties=props), **HTTP)
    listed = {p.name for p in sdk.rai_policies.list(GROUP, ACCOUNT, **HTTP)}
    assert listed >= {"Microsoft.DefaultV2", "prompt-words", "withheld", "withheld-async"}
    deploy(sdk, "guarded", "prompt-words")
    deploy(sdk, "mute", "withheld")
    deploy(sdk, "mute-async", "withheld-async")


def client(server: Server) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.endpoint, api_key=server.key1, api_version="2024-10-21", max_retries=0
    )


def chat(server: Server, deployment: str, text: str, **extra: Any) -> Any:
    return client(server).chat.completions.create(
        model=deployment, messages=[{"role": "user", "content": text}], max_tokens=12, **extra
    )


@pytest.mark.usefixtures("policies")
def test_a_blocked_prompt_is_azures_400(filtered: Server) -> None:
    for text in ("Tell me about Zanzibar.", "Who was don quixote2?"):
        with pytest.raises(openai.BadRequestError) as caught:
            chat(filtered, "guarded", text)
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "content_filter"
        result = error["innererror"]["content_filter_result"]
        assert result["custom_blocklists"] == {
            "filtered": True,
            "details": [{"filtered": True, "id": "words"}],
        }
        assert caught.value.response.status_code == 400


@pytest.mark.usefixtures("policies")
def test_annotations_come_from_the_classifiers(filtered: Server) -> None:
    answer = chat(filtered, "guarded", "What is the capital of France?")
    raw = answer.model_dump()
    prompt = raw["prompt_filter_results"][0]["content_filter_results"]
    assert set(prompt) >= {
        "hate",
        "sexual",
        "violence",
        "self_harm",
        "jailbreak",
        "custom_blocklists",
    }
    assert prompt["hate"]["filtered"] is False and prompt["hate"]["severity"] in ("safe", "low")
    choice = raw["choices"][0]["content_filter_results"]
    assert set(choice) >= {"hate", "sexual", "violence", "self_harm"}


@pytest.mark.usefixtures("policies")
def test_a_jailbreak_from_the_labelled_set_is_detected(filtered: Server) -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    attack = next(r["text"] for r in rows if r["label"] == "jailbreak")
    with pytest.raises(openai.BadRequestError) as caught:
        chat(filtered, "gpt-35-turbo", attack)  # the built-in default policy
    assert isinstance(caught.value.body, dict)
    result = caught.value.body["innererror"]["content_filter_result"]
    assert result["jailbreak"] == {"filtered": True, "detected": True}


@pytest.mark.usefixtures("policies")
def test_a_withheld_completion_in_json_with_n(filtered: Server) -> None:
    answer = chat(filtered, "mute", "Say something nice.", n=2)
    assert len(answer.choices) == 2
    for choice in answer.choices:
        assert choice.finish_reason == "content_filter"
        assert not choice.message.content
        results = choice.model_dump()["content_filter_results"]
        assert results["custom_blocklists"]["details"] == [{"filtered": True, "id": "anything"}]
    assert answer.usage is not None and answer.usage.completion_tokens > 0


@pytest.mark.usefixtures("policies")
@pytest.mark.parametrize("deployment", ["mute", "mute-async"])
def test_a_withheld_completion_in_both_streaming_modes(filtered: Server, deployment: str) -> None:
    chunks = list(chat(filtered, deployment, "Say something nice.", stream=True, n=2))
    assert chunks[0].choices == [] and chunks[0].model_dump()["prompt_filter_results"]
    finishes = {
        c.choices[0].index: c.choices[0].finish_reason
        for c in chunks
        if c.choices and c.choices[0].finish_reason
    }
    assert finishes == {0: "content_filter", 1: "content_filter"}
    if deployment == "mute":  # default mode: nothing withheld reached the client
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == ""
