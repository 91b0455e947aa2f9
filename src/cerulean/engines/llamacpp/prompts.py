"""Turning chat messages into a prompt for a completion model.

Two kinds of format:

* :class:`TemplateFormat` renders the GGUF's own ``tokenizer.chat_template`` with the sandboxed
  Jinja formatter llama-cpp-python ships (the same environment Hugging Face uses).
* :data:`BASE_FORMATS` are hand-written formats for *base* models that carry no template, such as
  the embedded Gemma 3 270M. Which one the embedded model uses was chosen by measurement
  (``bench/prompt_formats.py``, results in ``docs/prompt-format.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cerulean.engines.base import ChatMessage
from cerulean.engines.llamacpp.tools import render_calls
from cerulean.errors import InvalidRequest

__all__ = [
    "BASE_FORMATS",
    "EMBEDDED_FORMAT",
    "PromptFormat",
    "RenderedPrompt",
    "TemplateFormat",
    "flatten",
]


def flatten(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """The conversation as text messages a prompt format renders.

    Content parts are joined (this engine reads text only: other kinds are a 400); an assistant
    message that only called functions shows its calls as the model is asked to write them
    (:func:`~cerulean.engines.llamacpp.tools.render_calls`); tool results are their text.
    """
    return tuple(_flat(message, index) for index, message in enumerate(messages))


def _flat(message: ChatMessage, index: int) -> ChatMessage:
    content = message.content
    if content is None:
        calls = list(message.tool_calls)
        if message.function_call is not None:
            calls.append(message.function_call)
        text = render_calls(calls) if calls else ""
    elif isinstance(content, str):
        text = content
    else:
        for part in content:
            if part.type not in ("text", "refusal"):
                raise InvalidRequest(
                    "This model accepts text only; content parts of type "
                    f"'{part.type}' are not supported by this deployment.",
                    param=f"messages.{index}.content",
                )
        text = message.text
    return ChatMessage(role=message.role, content=text, name=message.name)


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt and the stop strings that end the assistant's turn in it."""

    text: str
    stop: tuple[str, ...]


class PromptFormat:
    """Renders messages; subclasses decide how."""

    name = "abstract"

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        raise NotImplementedError


class TemplateFormat(PromptFormat):
    """The model's own Jinja chat template."""

    name = "chat-template"

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(
            template=template, bos_token=bos_token, eos_token=eos_token
        )
        self._eos = eos_token

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        from jinja2 import TemplateError

        wire: list[Any] = [_as_dict(m) for m in messages]
        try:
            result = self._formatter(messages=wire)
        except TemplateError as exc:  # the template's raise_exception(), or a broken template
            raise InvalidRequest(
                f"This deployment's chat template cannot render these messages: {exc}",
                param="messages",
            ) from None
        return RenderedPrompt(text=result.prompt, stop=(self._eos,) if self._eos else ())


def _as_dict(message: ChatMessage) -> dict[str, str]:
    out = {"role": message.role, "content": message.text}
    if message.name:
        out["name"] = message.name
    return out


class _Transcript(PromptFormat):
    """``Role: text`` lines, optionally under a preamble; the turn ends at the next role label."""

    def __init__(
        self, name: str, labels: dict[str, str], preamble: str = "", end: str = "\n\n\n"
    ) -> None:
        self.name = name
        self._labels = labels
        self._preamble = preamble
        self._end = end

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        lines = [self._preamble] if self._preamble else []
        for message in messages:
            label = self._labels.get(message.role, self._labels["user"])
            lines.append(f"{label}: {message.text.strip()}")
        lines.append(f"{self._labels['assistant']}:")
        stops = tuple(f"\n{label}:" for label in dict.fromkeys(self._labels.values()))
        return RenderedPrompt(text="\n".join(lines), stop=(*stops, self._end))


class _GemmaTurns(PromptFormat):
    """Gemma's instruction-tuned turn markup (system text folded into the first user turn)."""

    name = "gemma-turns"

    def render(self, messages: Sequence[ChatMessage]) -> RenderedPrompt:
        parts: list[str] = []
        pending_system = ""
        for message in messages:
            if message.role in ("system", "developer"):
                pending_system += message.text.strip() + "\n\n"
                continue
            role = "model" if message.role == "assistant" else "user"
            text = message.text.strip()
            if role == "user" and pending_system:
                text, pending_system = pending_system + text, ""
            parts.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
        parts.append("<start_of_turn>model\n")
        return RenderedPrompt(
            text="".join(parts), stop=("<end_of_turn>", "<start_of_turn>", "\n\n\n")
        )


_CHAT_LABELS = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
    "function": "Tool",
}

BASE_FORMATS: dict[str, Callable[[], PromptFormat]] = {
    "gemma-turns": _GemmaTurns,
    "transcript": lambda: _Transcript("transcript", _CHAT_LABELS),
    "transcript-paragraph": lambda: _Transcript("transcript-paragraph", _CHAT_LABELS, end="\n\n"),
    "transcript-preamble": lambda: _Transcript(
        "transcript-preamble",
        _CHAT_LABELS,
        preamble="A conversation between a user and a helpful, concise assistant. "
        "The assistant answers in one or two sentences.\n",
    ),
}

# Chosen by bench/prompt_formats.py; see docs/prompt-format.md for the figures.
EMBEDDED_FORMAT = "transcript-paragraph"
