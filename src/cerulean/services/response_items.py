"""Responses API items: the request's ``input``, ``tools``, ``tool_choice`` and ``text.format``
read into the engine's terms, and a stored conversation turned back into chat messages.

Items are kept as JSON-ready dicts in the shapes the API sends back (``input_items``, a
response's ``output``): ``message`` (role and content parts), ``function_call`` and
``function_call_output``. Chat's own readers validate the tools and the JSON schema, so the
Responses API and chat refuse the same things.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cerulean.engines.base import ChatMessage, ContentPart, ResponseFormat, ToolCall, Tools
from cerulean.errors import InvalidRequest
from cerulean.protocol.ids import completion_id
from cerulean.services.chat import read_response_format
from cerulean.services.tools import read_tools

__all__ = [
    "chat_messages",
    "echo_tools",
    "item_id",
    "read_format",
    "read_input",
    "read_response_tools",
]

_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text")


def item_id(prefix: str) -> str:
    """An item id such as ``msg_…``, ``fc_…`` or ``call_…``."""
    return completion_id(f"{prefix}_")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- input ----------------------------------------------------------------------------------------


def read_input(value: str | list[Any] | None) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items, each with an id (raises Azure's 400s)."""
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not value:
        raise InvalidRequest(
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            param="input",
        )
    return [_item(entry, f"input[{index}]") for index, entry in enumerate(value)]


def _message(role: str, content: list[dict[str, Any]], given: str | None = None) -> dict[str, Any]:
    return {
        "id": given or item_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def _item(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{_short(entry)} is not of type 'object' - '{where}'", param=where)
    kind = entry.get("type", "message")
    if kind == "message":
        return _message_item(entry, where)
    if kind == "function_call":
        call_id, name, arguments = (
            _string(entry, key, where) for key in ("call_id", "name", "arguments")
        )
        return {
            "id": _optional_id(entry, "fc", where),
            "type": "function_call",
            "status": "completed",
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }
    if kind == "function_call_output":
        call_id = _string(entry, "call_id", where)
        return {
            "id": _optional_id(entry, "fco", where),
            "type": "function_call_output",
            "status": "completed",
            "call_id": call_id,
            "output": _output_text(entry.get("output"), f"{where}.output"),
        }
    raise InvalidRequest(
        f"Invalid value: {_short(kind)}. Supported values are: 'message', 'function_call' and "
        "'function_call_output'.",
        param=f"{where}.type",
    )


def _optional_id(entry: dict[str, Any], prefix: str, where: str) -> str:
    given = entry.get("id")
    if given is None:
        return item_id(prefix)
    if not isinstance(given, str):
        raise InvalidRequest(f"{_short(given)} is not of type 'string' - '{where}.id'", param=where)
    return given


def _string(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{where}.{key}'.", param=f"{where}.{key}"
        )
    if not isinstance(value, str):
        raise InvalidRequest(
            f"{_short(value)} is not of type 'string' - '{where}.{key}'", param=f"{where}.{key}"
        )
    return value


def _output_text(value: Any, where: str) -> str:
    """A ``function_call_output``'s output: text, or a list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in value
    ):
        return "".join(p["text"] for p in value)
    if value is None:
        raise InvalidRequest(f"Missing required parameter: '{where}'.", param=where)
    raise InvalidRequest(f"{_short(value)} is not of type 'string' - '{where}'", param=where)


def _message_item(entry: dict[str, Any], where: str) -> dict[str, Any]:
    role = entry.get("role")
    if role not in _ROLES:
        listed = ", ".join(repr(r) for r in _ROLES)
        raise InvalidRequest(
            f"Invalid value: {_short(role)}. Supported values are: {listed}.", param=f"{where}.role"
        )
    text_kind = "output_text" if role == "assistant" else "input_text"
    content = entry.get("content")
    if isinstance(content, str):
        parts: list[dict[str, Any]] = [{"type": text_kind, "text": content}]
    elif isinstance(content, list) and content:
        parts = [_part(p, f"{where}.content[{i}]", text_kind) for i, p in enumerate(content)]
    else:
        raise InvalidRequest(
            f"Invalid '{where}.content': expected a string or a non-empty array of content parts.",
            param=f"{where}.content",
        )
    if role == "assistant":
        for part in parts:
            if part["type"] == "output_text":
                part.setdefault("annotations", [])
                part.setdefault("logprobs", [])
    given = entry.get("id")
    return _message(role, parts, given if isinstance(given, str) else None)


def _part(part: Any, where: str, text_kind: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{_short(part)} is not of type 'object' - '{where}'", param=where)
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(
                f"Missing required parameter: '{where}.text'.", param=f"{where}.text"
            )
        return {"type": text_kind if kind == "text" else kind, "text": text}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind in ("input_image", "input_file", "input_audio"):
        return dict(part)  # kept; the deployment's model decides whether it can read it
    raise InvalidRequest(
        f"Invalid value: {_short(kind)}. Supported values are: 'input_text', 'output_text', "
        "'refusal', 'input_image', 'input_file' and 'input_audio'.",
        param=f"{where}.type",
    )


# -- the conversation as chat messages ------------------------------------------------------------


def chat_messages(instructions: str | None, items: Iterable[dict[str, Any]]) -> list[ChatMessage]:
    """The conversation the model reads: ``instructions`` as the system message, then the
    items, consecutive function calls joined into one assistant message."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append(ChatMessage("system", instructions))
    names: dict[str, str] = {}
    for item in items:
        kind = item.get("type")
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            names[call.id] = call.name
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and last.tool_calls:
                messages[-1] = ChatMessage(
                    "assistant", last.content, tool_calls=(*last.tool_calls, call)
                )
            else:
                messages.append(ChatMessage("assistant", None, tool_calls=(call,)))
        elif kind == "function_call_output":
            call_id = item["call_id"]
            messages.append(
                ChatMessage("tool", item["output"], name=names.get(call_id), tool_call_id=call_id)
            )
    return messages


def _chat_message(item: dict[str, Any]) -> ChatMessage:
    parts = item["content"]
    if all(part["type"] in _TEXT_PARTS for part in parts):
        return ChatMessage(item["role"], "".join(part["text"] for part in parts))
    converted = tuple(_chat_part(part) for part in parts)
    return ChatMessage(item["role"], converted)


def _chat_part(part: dict[str, Any]) -> ContentPart:
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return ContentPart("text", part["text"], {"type": "text", "text": part["text"]})
    if kind == "refusal":
        return ContentPart("refusal", part["refusal"], part)
    if kind == "input_image":
        url = part.get("image_url")
        raw = {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail")}}
        return ContentPart("image_url", None, raw)
    return ContentPart(kind, None, part)


# -- tools and the text format --------------------------------------------------------------------


def read_response_tools(
    tools: list[Any] | None, tool_choice: str | dict[str, Any] | None, parallel: bool | None
) -> Tools | None:
    """Function ``tools`` (the Responses API's flat shape) and ``tool_choice``, validated by
    chat's rules; other tool kinds (web search, file search...) are a 400."""
    if not tools and tool_choice in (None, "auto", "none"):
        return None  # nothing to call (OpenAI accepts these choices without tools)
    chat_tools = None if tools is None else [_chat_tool(t, i) for i, t in enumerate(tools)]
    return read_tools(chat_tools, _chat_choice(tool_choice), None, None, parallel)


def _chat_tool(tool: Any, index: int) -> Any:
    if not isinstance(tool, dict):
        return tool  # read_tools names the problem
    kind = tool.get("type")
    if kind != "function":
        raise InvalidRequest(
            f"Invalid value: {_short(kind)}. Supported values are: 'function' (this deployment "
            "has no built-in tools).",
            param=f"tools[{index}].type",
        )
    function = {k: v for k, v in tool.items() if k != "type"}
    return {"type": "function", "function": function}


def _chat_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def echo_tools(tools: Tools | None) -> list[dict[str, Any]]:
    """The request's function tools as a response shows them."""
    if tools is None:
        return []
    return [
        {
            "type": "function",
            "name": spec.name,
            "description": spec.description or None,
            "parameters": dict(spec.parameters),
            "strict": spec.strict if spec.strict is not None else True,
        }
        for spec in tools.functions
    ]


def read_format(text: dict[str, Any] | None) -> tuple[ResponseFormat | None, dict[str, Any]]:
    """``text.format`` as the engine's format (chat's reader), and as the response echoes it."""
    fmt = (text or {}).get("format")
    if fmt is None:
        return None, {"type": "text"}
    if not isinstance(fmt, dict):
        raise InvalidRequest(
            f"{_short(fmt)} is not of type 'object' - 'text.format'", param="text.format"
        )
    kind = fmt.get("type")
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str):
            raise InvalidRequest(
                "Missing required parameter: 'text.format.name'.", param="text.format.name"
            )
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        read = read_response_format({"type": "json_schema", "json_schema": spec})
        return read, {"type": "json_schema", **spec}
    if kind in ("text", "json_object"):
        return read_response_format({"type": kind}), {"type": kind}
    raise InvalidRequest(
        f"Invalid value: {_short(kind)}. Supported values are: 'text', 'json_object' and "
        "'json_schema'.",
        param="text.format.type",
    )
