"""The playground's "view code": openai-python 1.x and curl for exactly the current settings.

The key is never written into a snippet: the Python one reads ``AZURE_OPENAI_API_KEY`` and the
curl one ``$AZURE_OPENAI_API_KEY``, as the banner's export lines set them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PlaygroundSettings", "curl_snippet", "python_snippet", "request_body"]

API_VERSION = "2024-10-21"


@dataclass(frozen=True)
class PlaygroundSettings:
    """What the playground sends: the deployment, the conversation and the parameters."""

    deployment: str
    messages: list[dict[str, str]] = field(default_factory=list)
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    json_mode: bool = False
    stream: bool = True


def request_body(settings: PlaygroundSettings) -> dict[str, Any]:
    """The chat completions body (without ``model``: the deployment is in the path)."""
    body: dict[str, Any] = {"messages": settings.messages}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    if settings.stop:
        body["stop"] = settings.stop
    if settings.json_mode:
        body["response_format"] = {"type": "json_object"}
    if settings.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def python_snippet(settings: PlaygroundSettings, endpoint: str) -> str:
    """An openai-python 1.x program sending exactly this request."""
    args = [f"    model={settings.deployment!r},  # the deployment name"]
    args.append(f"    messages={_py(settings.messages, 4)},")
    if settings.temperature is not None:
        args.append(f"    temperature={settings.temperature!r},")
    if settings.max_tokens is not None:
        args.append(f"    max_tokens={settings.max_tokens!r},")
    if settings.stop:
        args.append(f"    stop={settings.stop!r},")
    if settings.json_mode:
        args.append('    response_format={"type": "json_object"},')
    if settings.stream:
        args.append("    stream=True,")
        args.append('    stream_options={"include_usage": True},')
    lines = [
        "import os",
        "from openai import AzureOpenAI",
        "",
        "client = AzureOpenAI(",
        f'    azure_endpoint=os.getenv("AZURE_OPENAI_ENDPOINT", {endpoint!r}),',
        '    api_key=os.getenv("AZURE_OPENAI_API_KEY"),  # key1 or key2: never paste it here',
        f'    api_version="{API_VERSION}",',
        ")",
        "",
        "response = client.chat.completions.create(",
        *args,
        ")",
    ]
    if settings.stream:
        lines += [
            "for chunk in response:",
            "    if chunk.choices and chunk.choices[0].delta.content:",
            '        print(chunk.choices[0].delta.content, end="", flush=True)',
            "    if chunk.usage:",
            "        print()",
            "        print(chunk.usage)",
        ]
    else:
        lines += ["print(response.choices[0].message.content)", "print(response.usage)"]
    return "\n".join(lines) + "\n"


def curl_snippet(settings: PlaygroundSettings, endpoint: str) -> str:
    """A curl command sending exactly this request (the key from the environment)."""
    base = endpoint.rstrip("/")
    url = shlex.quote(
        f"{base}/openai/deployments/{settings.deployment}/chat/completions"
        f"?api-version={API_VERSION}"
    )
    body = json.dumps(request_body(settings), ensure_ascii=False)
    flags = " -N" if settings.stream else ""
    return (
        f"curl{flags} {url} \\\n"
        '  -H "api-key: $AZURE_OPENAI_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}\n"
    )


def _py(value: Any, indent: int) -> str:
    text = json.dumps(value, indent=4, ensure_ascii=False)
    text = (
        text.replace(": true", ": True").replace(": false", ": False").replace(": null", ": None")
    )
    pad = " " * indent
    return text.replace("\n", "\n" + pad)
