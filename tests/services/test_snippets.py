"""The playground's "view code": the snippets run the same request, and hold no key."""

from __future__ import annotations

import ast
import json
import shlex

from cerulean.services.snippets import (
    PlaygroundSettings,
    curl_snippet,
    python_snippet,
    request_body,
)

SETTINGS = PlaygroundSettings(
    deployment="gpt-4o",
    messages=[
        {"role": "system", "content": 'Say "hi"\nthen stop.'},
        {"role": "user", "content": "Héllo"},
    ],
    temperature=0.3,
    max_tokens=40,
    stop=["END"],
    json_mode=True,
)


def test_the_python_snippet_parses_and_sends_these_settings() -> None:
    code = python_snippet(SETTINGS, "http://127.0.0.1:8000/")
    tree = ast.parse(code)
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "create"
    )
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kwargs["model"] == "gpt-4o"
    assert kwargs["messages"] == SETTINGS.messages
    assert kwargs["temperature"] == 0.3 and kwargs["max_tokens"] == 40
    assert kwargs["stop"] == ["END"] and kwargs["response_format"] == {"type": "json_object"}
    assert kwargs["stream"] is True
    assert 'os.getenv("AZURE_OPENAI_API_KEY")' in code


def test_the_curl_snippet_sends_the_same_body() -> None:
    command = curl_snippet(SETTINGS, "http://127.0.0.1:8000/")
    words = shlex.split(command.replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    assert body == request_body(SETTINGS)
    assert (
        "http://127.0.0.1:8000/openai/deployments/gpt-4o/chat/completions?api-version=" in command
    )
    assert "api-key: $AZURE_OPENAI_API_KEY" in words
