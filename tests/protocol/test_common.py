from __future__ import annotations

import pytest

from cerulean.errors import InvalidRequest
from cerulean.protocol.chat import CreateChatCompletionRequest
from cerulean.protocol.common import parse_body


def parse(raw: bytes) -> CreateChatCompletionRequest:
    return parse_body(raw, CreateChatCompletionRequest)


def test_valid_body() -> None:
    body = parse(b'{"messages":[{"role":"user","content":"hi"}],"temperature":0.5,"model":"x"}')
    assert body.messages[0].content == "hi" and body.temperature == 0.5


def test_escaped_surrogate_pairs_are_text() -> None:
    body = parse(b'{"messages":[{"role":"user","content":"\\ud83d\\ude00 \\u00e9"}]}')
    assert body.messages[0].content == "\U0001f600 \u00e9"


@pytest.mark.parametrize(
    ("raw", "message", "param"),
    [
        (b"{not json", "We could not parse the JSON body", None),
        (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "could not parse", None),
        (b'{"messages":[{"role":"user","content":"a\\ud800"}]}', "surrogate \\ud800", None),
        (b'{"messages":[{"role":"user","content":"x"}],"\\udfff":1}', "surrogate \\udfff", None),
        (b"[1, 2]", "is not of type 'object'", None),
        (b"{}", "'messages' is a required property", "messages"),
        (b'{"messages": []}', "is too short - 'messages'", "messages"),
        (
            b'{"messages":[{"content":"x"}]}',
            "'role' is a required property - 'messages.0'",
            "messages.0.role",
        ),
        (
            b'{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}',
            "'hot' is not of type 'number' - 'temperature'",
            "temperature",
        ),
        (
            b'{"messages":[{"role":"user","content":"x"}],"temperature":5}',
            "5 is greater than the maximum of 2 - 'temperature'",
            "temperature",
        ),
        (
            b'{"messages":[{"role":"user","content":"x"}],"max_tokens":0}',
            "0 is less than the minimum of 1 - 'max_tokens'",
            "max_tokens",
        ),
        (
            b'{"messages":[{"role":"user","content":"x"}],"stream":"yes"}',
            "'yes' is not of type 'boolean' - 'stream'",
            "stream",
        ),
        (b'{"messages":[{"role":"robot","content":"x"}]}', "messages.0.role", "messages.0.role"),
    ],
)
def test_invalid_bodies_get_azure_messages(raw: bytes, message: str, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(raw)
    assert message in info.value.message
    assert info.value.param == param
    assert info.value.status_code == 400
