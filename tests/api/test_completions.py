"""Legacy completions and chat logprobs in-process (TestClient + FakeEngine): shapes and 400s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cerulean.engines.fake import FakeEngine
from tests.api.test_chat import URL as CHAT_URL
from tests.api.test_chat import sse_events

URL = "/openai/deployments/gpt-35-turbo/completions?api-version=2024-10-21"
OLD_URL = "/openai/deployments/gpt-35-turbo/completions?api-version=2023-05-15"


def post(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def error(client: TestClient, body: dict[str, Any], url: str = URL) -> dict[str, Any]:
    response = client.post(url, json=body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert set(payload) == {"error"}  # never FastAPI's {"detail": ...}
    assert payload["error"]["type"] == "invalid_request_error"
    result: dict[str, Any] = payload["error"]
    return result


def test_plain_completion_shape(client: TestClient, fake_engine: FakeEngine) -> None:
    body = post(client, prompt="Once upon a time")
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == "fake-model"
    choice = body["choices"][0]
    assert choice["text"] == " You said: Once upon a time"
    assert (choice["index"], choice["logprobs"], choice["finish_reason"]) == (0, None, "stop")
    assert choice["content_filter_results"]["error"]["code"] == "content_filter_error"
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    request = fake_engine.requests[-1]
    assert request.prompt == "Once upon a time" and request.messages == ()
    assert request.params.max_tokens == 16  # the legacy default


def test_2023_05_15_has_no_annotations(client: TestClient) -> None:
    body = client.post(OLD_URL, json={"prompt": "hi", "max_tokens": 2}).json()
    assert "prompt_filter_results" not in body
    assert "content_filter_results" not in body["choices"][0]
    assert body["choices"][0]["finish_reason"] == "length"


def test_prompt_list_gives_n_choices_per_prompt_in_openai_order(client: TestClient) -> None:
    body = post(client, prompt=["one", "two"], n=2)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"][-3:] for c in body["choices"]] == ["one", "one", "two", "two"]
    assert [p["prompt_index"] for p in body["prompt_filter_results"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == 4 and body["usage"]["completion_tokens"] == 12


def test_token_prompts(client: TestClient, fake_engine: FakeEngine) -> None:
    body = post(client, prompt=[1, 2, 3])
    assert body["choices"][0]["text"] == " You said: 1 2 3"
    body = post(client, prompt=[[5], [6, 7]])
    assert [c["text"] for c in body["choices"]] == [" You said: 5", " You said: 6 7"]
    assert fake_engine.requests[-1].prompt == (6, 7)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": [1, 1000]}, "prompt"),
        ({"prompt": [[1], [-1]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [[1], []]}, "prompt.1"),
        ({"prompt": ["a", 1]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": [True]}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"prompt": "x", "best_of": 21}, "best_of"),
        ({"prompt": "x", "n": 3, "best_of": 2}, "best_of"),
        ({"prompt": "x", "best_of": 2, "stream": True}, "best_of"),
        ({"prompt": "x", "suffix": "end"}, "suffix"),
        ({"prompt": "x", "suffix": "end", "echo": True}, "echo"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": "x", "logit_bias": {"x": 1}}, "logit_bias"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
    ],
)
def test_bad_requests_get_azure_400s(client: TestClient, body: dict[str, Any], param: str) -> None:
    assert error(client, body)["param"] == param


def test_missing_prompt_message(client: TestClient) -> None:
    assert error(client, {"max_tokens": 1})["message"] == "'prompt' is a required property"


def test_context_overflow_names_the_prompt(client: TestClient) -> None:
    found = error(client, {"prompt": "word " * 40, "max_tokens": 30})
    assert found["code"] == "context_length_exceeded" and found["param"] == "prompt"
    assert "you requested 71 tokens (41 in your prompt; 30 for the completion)" in found["message"]


def test_null_prompt_is_a_new_document(client: TestClient, fake_engine: FakeEngine) -> None:
    post(client, prompt=None)
    assert fake_engine.requests[-1].prompt == ""


def test_logprobs_legacy_shape(client: TestClient) -> None:
    choice = post(client, prompt="hi there", logprobs=2)["choices"][0]
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == [" You", " said:", " hi there"]
    assert logprobs["token_logprobs"] == [-0.25, -0.5, -0.75]
    assert logprobs["top_logprobs"][0] == {" You": -0.25, "alt1": -1.25}
    assert logprobs["text_offset"] == [8, 12, 18]  # counted from the start of the prompt
    assert "".join(logprobs["tokens"]) == choice["text"]


def test_logprobs_zero_lists_the_chosen_token_only(client: TestClient) -> None:
    logprobs = post(client, prompt="a", logprobs=0)["choices"][0]["logprobs"]
    assert logprobs["top_logprobs"] == [{" You": -0.25}, {" said:": -0.5}, {" a": -0.75}]


def test_echo_prepends_the_prompt(client: TestClient) -> None:
    text = post(client, prompt="Say", echo=True, n=2)["choices"][1]["text"]
    assert text == "Say You said: Say"


def test_echo_with_logprobs_lists_the_prompt_first(client: TestClient) -> None:
    choice = post(client, prompt="Say", echo=True, logprobs=1)["choices"][0]
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == ["Say", " You", " said:", " Say"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert logprobs["text_offset"] == [0, 3, 7, 13]
    assert "".join(logprobs["tokens"]) == choice["text"]


def test_max_tokens_zero_with_echo(client: TestClient) -> None:
    choice = post(client, prompt="Say", echo=True, max_tokens=0)["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("Say", "length")


def test_best_of_returns_n_and_bills_every_candidate(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    body = post(client, prompt="pick", best_of=3)
    assert len(body["choices"]) == 1 and body["choices"][0]["logprobs"] is None
    assert body["usage"]["completion_tokens"] == 9
    request = fake_engine.requests[-1]
    assert request.n == 3 and request.params.logprobs == 0  # ranked by log probability


def test_sampling_parameters_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    post(
        client,
        prompt="x",
        temperature=0.5,
        top_p=0.9,
        stop="\n",
        seed=7,
        presence_penalty=1.0,
        frequency_penalty=-1.0,
        logit_bias={"12": -100},
        user="me",
        max_tokens=3,
    )
    params = fake_engine.requests[-1].params
    assert (params.temperature, params.top_p, params.stop, params.seed) == (0.5, 0.9, ("\n",), 7)
    assert (params.presence_penalty, params.frequency_penalty) == (1.0, -1.0)
    assert params.logit_bias == ((12, -100.0),) and params.max_tokens == 3


def stream_chunks(client: TestClient, url: str = URL, **body: Any) -> list[dict[str, Any]]:
    response = client.post(url, json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_stream_framing(client: TestClient) -> None:
    chunks = stream_chunks(client, prompt="hello")
    assert chunks[0]["choices"] == [] and chunks[0]["prompt_filter_results"][0]["prompt_index"] == 0
    body = chunks[1:]
    assert all(c["object"] == "text_completion" for c in body)
    assert len({c["id"] for c in body}) == 1 and body[0]["id"].startswith("cmpl-")
    assert "".join(c["choices"][0]["text"] for c in body) == " You said: hello"
    assert [c["choices"][0]["finish_reason"] for c in body][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in body[:-1])
    assert (
        body[0]["choices"][0]["content_filter_results"]["error"]["code"] == "content_filter_error"
    )


def test_stream_several_prompts_logprobs_and_usage(client: TestClient) -> None:
    chunks = stream_chunks(
        client,
        prompt=["a", "b"],
        n=2,
        logprobs=1,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    for chunk in chunks[1:-1]:
        choice = chunk["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        assert chunk["usage"] is None
        if choice["text"]:
            assert choice["logprobs"]["tokens"] == [choice["text"]]
    assert texts == {0: " You said: a", 1: " You said: a", 2: " You said: b", 3: " You said: b"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 16


def test_stream_with_an_old_version_has_no_filter_chunk(client: TestClient) -> None:
    chunks = stream_chunks(client, url=OLD_URL, prompt="hi")
    assert chunks[0]["choices"][0]["text"] == " You"
    assert "content_filter_results" not in chunks[0]["choices"][0]


# -- chat logprobs -------------------------------------------------------------------------

CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


def test_chat_logprobs_shape(client: TestClient, fake_engine: FakeEngine) -> None:
    response = client.post(CHAT_URL, json={**CHAT, "logprobs": True, "top_logprobs": 2})
    choice = response.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    assert [t["token"] for t in content] == ["You said: ", "hello there"]
    assert content[0]["logprob"] == -0.25 and content[0]["bytes"] == list(b"You said: ")
    assert content[0]["top_logprobs"][1] == {
        "token": "alt1",
        "logprob": -1.25,
        "bytes": [97, 108, 116, 49],
    }
    assert fake_engine.requests[-1].params.logprobs == 2


def test_chat_without_logprobs_has_none(client: TestClient) -> None:
    assert client.post(CHAT_URL, json=CHAT).json()["choices"][0]["logprobs"] is None


def test_chat_logprobs_true_alone_gives_no_alternatives(client: TestClient) -> None:
    body = client.post(CHAT_URL, json={**CHAT, "logprobs": True}).json()
    assert all(t["top_logprobs"] == [] for t in body["choices"][0]["logprobs"]["content"])


def test_chat_stream_carries_logprobs_on_content_chunks(client: TestClient) -> None:
    body = {**CHAT, "logprobs": True, "top_logprobs": 1, "stream": True}
    events = sse_events(client.post(CHAT_URL, json=body).text)
    chunks = [json.loads(e) for e in events[:-1]]
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["logprobs"]["content"][0]["token"] for c in content] == [
        "You said: ",
        "hello there",
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": 1}, "logprobs"),
    ],
)
def test_chat_logprobs_400s(client: TestClient, extra: dict[str, Any], param: str) -> None:
    assert error(client, {**CHAT, **extra}, url=CHAT_URL)["param"] == param


# -- api-version rules, fingerprint, rate limits ------------------------------------------


@pytest.mark.parametrize(
    ("version", "extra", "unknown"),
    [
        ("2023-05-15", {"seed": 1}, "seed"),
        ("2024-06-01", {"stream_options": {"include_usage": True}}, "stream_options"),
        ("2024-10-21", {"promt": "typo"}, "promt"),
    ],
)
def test_unrecognized_argument(
    client: TestClient, version: str, extra: dict[str, Any], unknown: str
) -> None:
    url = URL.replace("2024-10-21", version)
    found = error(client, {"prompt": "hi", **extra}, url=url)
    assert found["message"] == f"Unrecognized request argument supplied: {unknown}"


def test_azure_only_fields_of_2023_05_15_are_accepted(client: TestClient) -> None:
    body = client.post(OLD_URL, json={"prompt": "hi", "cache_level": 0, "completion_config": ""})
    assert body.status_code == 200


def test_system_fingerprint_from_2023_12_01_preview(client: TestClient) -> None:
    # The fake engine has no fingerprint; the field is absent rather than invented.
    assert "system_fingerprint" not in post(client, prompt="hi")


def test_completions_are_charged_to_the_rate_limits(client: TestClient) -> None:
    response = client.post(URL, json={"prompt": ["one two", "three"], "max_tokens": 5, "n": 2})
    assert response.status_code == 200
    remaining = int(response.headers["x-ratelimit-remaining-tokens"])
    limit = int(response.headers["x-ratelimit-limit-tokens"])
    # Each prompt about ceil(characters / 4) + 1 = 3 tokens, plus max_tokens 5 × n 2.
    assert limit - remaining == (3 + 10) + (3 + 10)
