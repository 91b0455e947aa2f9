"""Function calling on a local model: tools described in the prompt, calls decoded under a grammar.

A base model has no native tool calling, so the llama.cpp engine makes one:

* The functions are described in a system message (:func:`instructions`): the model is told to
  answer with a JSON object ``{"name": ..., "arguments": {...}}`` to call one. Earlier calls in
  the history are written back in that same form (:func:`render_calls`), tool results as
  ``tool`` messages.
* The answer is decoded under a grammar built from one JSON schema (:func:`call_schema`): an
  ``anyOf`` with one branch per function, whose ``name`` is a ``const`` and whose ``arguments``
  is that function's ``parameters``. So a call always names a real function and its arguments
  always validate. With parallel calls the answer may instead be an array of at most
  :data:`MAX_PARALLEL_CALLS` calls; without them (``parallel_tool_calls: false``, a named
  function, the legacy functions API) it is exactly one.
* ``required`` (or a named function) allows only calls; ``auto`` also allows plain text, which
  must not start with ``{`` or ``[``: the answer's first character tells which it is.
* :class:`CallReader` reads the answer as it is generated and turns the call form into tool-call
  deltas, so that no grammar text ever reaches ``content``: the first call's name as soon as it
  is complete, then its arguments piece by piece; each further call of a parallel answer once it
  is complete, unless it repeats an earlier call exactly (a small model tends to repeat its call
  until the array is full), which is dropped. A call cut by ``max_tokens`` keeps the arguments
  written so far and ends with ``finish_reason: "length"`` (docs/compatibility.md, "Function
  calling").

Pure Python: nothing here needs the native library.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cerulean.engines.base import ChatMessage, FunctionSpec, ToolCall, ToolCallDelta, Tools

__all__ = [
    "MAX_PARALLEL_CALLS",
    "CallReader",
    "active",
    "call_id",
    "call_schema",
    "instructions",
    "render_calls",
    "with_instructions",
]

# Calls one answer may hold when parallel calls are allowed: enough for real use, and a bound
# that keeps a small model from repeating calls until max_tokens.
MAX_PARALLEL_CALLS = 4
_ID_ALPHABET = string.ascii_letters + string.digits


def call_id() -> str:
    """An id like OpenAI's: ``call_`` and 24 letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def active(tools: Tools | None) -> tuple[FunctionSpec, ...]:
    """The functions the model may call now (none for ``tool_choice: none``)."""
    if tools is None or tools.choice == "none":
        return ()
    if tools.choice == "function":
        return tuple(f for f in tools.functions if f.name == tools.function)
    return tools.functions


def _parallel(tools: Tools) -> bool:
    return tools.parallel and not tools.legacy and tools.choice != "function"


def allows_text(tools: Tools) -> bool:
    """Whether the answer may be text instead of a call (``tool_choice: auto``)."""
    return tools.choice == "auto"


# -- what the model is told ---------------------------------------------------------------------


def instructions(tools: Tools) -> str:
    """The system text that describes the functions and the answer format."""
    lines = ["You can call these functions:"]
    for spec in active(tools):
        about = f": {spec.description.strip()}" if spec.description.strip() else ""
        lines.append(f"- {spec.name}{about}")
        lines.append(f"  arguments (JSON schema): {json.dumps(spec.parameters, sort_keys=True)}")
    call = '{"name": "<function name>", "arguments": {<arguments>}}'
    form = f"a JSON object {call}"
    if _parallel(tools):
        form += " (or, to call several at once, a JSON array of such objects)"
    if allows_text(tools):
        lines.append(f"To call a function, answer only with {form}; otherwise answer in text.")
    else:
        lines.append(f"Answer only with {form}.")
    return "\n".join(lines)


def with_instructions(messages: Sequence[ChatMessage], tools: Tools) -> tuple[ChatMessage, ...]:
    """``messages`` (flat text) with the function descriptions joined to the first system
    message, or in a system message put in front."""
    text = instructions(tools)
    if messages and messages[0].role in ("system", "developer"):
        head = messages[0]
        merged = ChatMessage(head.role, f"{head.text.rstrip()}\n\n{text}", head.name)
        return (merged, *messages[1:])
    return (ChatMessage("system", text), *messages)


def render_calls(calls: Sequence[ToolCall]) -> str:
    """An assistant message's earlier calls, written as the model is asked to write them."""
    rendered = []
    for call in calls:
        try:
            args: Any = json.loads(call.arguments)
        except (json.JSONDecodeError, TypeError):
            args = call.arguments
        rendered.append({"name": call.name, "arguments": args})
    value: Any = rendered[0] if len(rendered) == 1 else rendered
    return json.dumps(value, ensure_ascii=False)


def call_schema(tools: Tools) -> dict[str, Any]:
    """The JSON schema every call answer validates against."""
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": dict(spec.parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec in active(tools)
    ]
    one: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if not _parallel(tools):
        return one
    several = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
    return {"anyOf": [one, several]}


# -- reading the answer -------------------------------------------------------------------------

_OPEN = "{["
_CLOSE = {"}": "{", "]": "["}


@dataclass
class _Value:
    """The value of a call's key being read: its text so far and whether it has ended."""

    key: str
    text: str = ""
    depth: int = 0  # containers open inside the value
    in_string: bool = False
    escaped: bool = False
    done: bool = False


@dataclass
class CallReader:
    """Reads one streamed answer: text stays text; the call form becomes tool-call deltas.

    Feed it the answer's text as it comes (:meth:`feed`), and call :meth:`finish` at its end.
    """

    allow_text: bool
    new_id: Callable[[], str] = call_id
    is_call: bool | None = None  # None until the first visible character
    calls: int = 0  # calls given out so far
    _stack: list[str] = field(default_factory=list)
    _call_depth: int = 1  # containers open while inside a call object
    _key: str | None = None  # the key whose value comes next
    _key_text: str | None = None  # a key being read
    _key_escaped: bool = False
    _value: _Value | None = None
    _name: str | None = None  # of the call being read
    _args: str = ""  # its arguments so far
    _sent: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments) given out

    def finish(self) -> list[ToolCallDelta]:
        """At the end of the answer: a further call that was cut off, unless it was on its way to
        repeating an earlier one."""
        if self._name is None or not self.calls or self._streaming:
            return []
        name, args = self._name, self._args
        self._name = None
        if any(name == n and a.startswith(args) for n, a in self._sent):
            return []
        return self._release(name, args)

    @property
    def _streaming(self) -> bool:
        """Whether the call being read is the answer's first: its pieces go out as they come."""
        return len(self._sent) == 0 and self.calls == 1

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Text to show and call deltas for the next piece of the answer."""
        if self.is_call is None:
            stripped = text.lstrip()
            if not stripped:
                return "", []
            self.is_call = stripped[0] in _OPEN or not self.allow_text
            if self.is_call and stripped[0] == "[":
                self._call_depth = 2
        if not self.is_call:
            return text, []
        deltas: list[ToolCallDelta] = []
        for char in text:
            self._step(char, deltas)
        return "", _merge(deltas)

    def _step(self, char: str, out: list[ToolCallDelta]) -> None:
        value = self._value
        if value is not None and not value.done:
            self._value_char(value, char, out)
            return
        if self._key_text is not None:
            self._key_char(char)
            return
        depth = len(self._stack)
        if depth == self._call_depth and self._key is not None and char not in " \t\r\n:":
            self._start_value(char, out)
        elif char in _OPEN:
            self._stack.append(char)
            if len(self._stack) == self._call_depth:  # a new call object
                self._name, self._args = None, ""
        elif char in _CLOSE:
            if self._stack and self._stack[-1] == _CLOSE[char]:
                self._stack.pop()
                if len(self._stack) == self._call_depth - 1:
                    out.extend(self._call_ended())
        elif char == '"' and depth == self._call_depth:
            self._key_text = ""

    def _key_char(self, char: str) -> None:
        assert self._key_text is not None
        if self._key_escaped:
            self._key_escaped = False
            self._key_text += char
        elif char == "\\":
            self._key_escaped = True
        elif char == '"':
            self._key, self._key_text = self._key_text, None
        else:
            self._key_text += char

    def _start_value(self, char: str, out: list[ToolCallDelta]) -> None:
        assert self._key is not None
        self._value = _Value(self._key)
        self._key = None
        self._value_char(self._value, char, out)

    def _value_char(self, value: _Value, char: str, out: list[ToolCallDelta]) -> None:
        ended = _advance(value, char)
        if ended == "before":  # a bare value ended at this character, which is not its own
            value.done = True
            self._finish_value(value, out)
            self._step(char, out)
            return
        value.text += char
        if value.key == "arguments":
            self._arguments(char, out)
        if ended == "after":
            value.done = True
            self._finish_value(value, out)

    def _arguments(self, piece: str, out: list[ToolCallDelta]) -> None:
        self._args += piece
        if self._name is not None and self._streaming:
            out.append(ToolCallDelta(0, arguments=piece))

    def _finish_value(self, value: _Value, out: list[ToolCallDelta]) -> None:
        if value.key != "name" or self._name is not None:
            return
        try:
            name = json.loads(value.text)
        except json.JSONDecodeError:
            return
        if not isinstance(name, str):
            return
        self._name = name
        if self.calls == 0:  # the first call streams: its name now, its arguments as they come
            self.calls = 1
            out.append(ToolCallDelta(0, id=self.new_id(), name=name))
            if self._args:
                out.append(ToolCallDelta(0, arguments=self._args))

    def _call_ended(self) -> list[ToolCallDelta]:
        """A call object closed: the first was given out already; a further one goes out whole
        now, unless it repeats an earlier call exactly (a small model's habit), which is dropped."""
        name, args = self._name, self._args
        self._name = None
        if name is None:
            return []
        if self._streaming:
            self._sent.append((name, args))
            return []
        if any(name == n and _same_json(args, a) for n, a in self._sent):
            return []
        return self._release(name, args)

    def _release(self, name: str, args: str) -> list[ToolCallDelta]:
        index = len(self._sent)
        self._sent.append((name, args))
        self.calls = len(self._sent)
        return [
            ToolCallDelta(index, id=self.new_id(), name=name),
            ToolCallDelta(index, arguments=args),
        ]


def _same_json(a: str, b: str) -> bool:
    """Whether two arguments texts are the same JSON value (or, not parsing, the same text)."""
    try:
        return bool(json.loads(a) == json.loads(b))
    except json.JSONDecodeError:
        return a == b


def _advance(value: _Value, char: str) -> str | None:
    """Where ``char`` leaves the JSON value being read: ``"after"`` it ends the value,
    ``"before"`` the value had ended just before it (bare values), None it is inside."""
    if value.in_string:
        if value.escaped:
            value.escaped = False
        elif char == "\\":
            value.escaped = True
        elif char == '"':
            value.in_string = False
            return "after" if value.depth == 0 else None
        return None
    if not value.text:  # the value's first character
        if char == '"':
            value.in_string = True
        elif char in _OPEN:
            value.depth = 1
        return None
    if value.depth == 0:  # a bare value: ends at the first character that cannot continue it
        return "before" if char in " \t\r\n,}]" else None
    if char == '"':
        value.in_string = True
    elif char in _OPEN:
        value.depth += 1
    elif char in _CLOSE:
        value.depth -= 1
        return "after" if value.depth == 0 else None
    return None


def _merge(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Adjacent argument pieces of one call joined into one delta (a call's first delta, with
    its id and name, stays on its own, as Azure sends it)."""
    merged: list[ToolCallDelta] = []
    for delta in deltas:
        last = merged[-1] if merged else None
        if last is not None and last.id is None and delta.id is None and last.index == delta.index:
            merged[-1] = ToolCallDelta(last.index, arguments=last.arguments + delta.arguments)
        else:
            merged.append(delta)
    return merged
