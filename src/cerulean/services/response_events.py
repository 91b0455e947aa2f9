"""A response as it is generated: engine chunks in, the Responses API's stream events out.

:class:`Shaper` keeps the response object up to date (its ``output`` items, status and usage)
and numbers every event it makes (``sequence_number`` from 0, strictly increasing). The order is
openai-python's: ``response.created``, ``response.in_progress``, then per output item
``output_item.added`` (a message: ``content_part.added``, ``output_text.delta``…,
``output_text.done``, ``content_part.done``; a function call: ``function_call_arguments.delta``…,
``.done``) and ``output_item.done``, and last ``response.completed``, ``response.incomplete``
or ``response.failed``.
"""

from __future__ import annotations

import copy
from typing import Any

from cerulean.engines.base import EngineChunk
from cerulean.services.response_items import item_id

__all__ = ["Shaper", "usage_body"]

# Finish reasons that leave a response incomplete, with the reason the API gives.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A response's ``usage``."""
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


class Shaper:
    """Builds ``response`` (mutated in place) and the events that tell how it was built."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.sequence = 0
        self._text: int | None = None  # output index of the open message item
        self._calls: dict[int, int] = {}  # the engine's call index -> output index
        self._open: list[int] = []  # output indexes not yet done, in order

    @property
    def output(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.response["output"]
        return items

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """One event, numbered."""
        event = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return event

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def opening(self) -> list[dict[str, Any]]:
        """``response.created`` (as the response was accepted) and ``response.in_progress``."""
        created = self.event("response.created", response=self.snapshot())
        self.response["status"] = "in_progress"
        return [created, self.event("response.in_progress", response=self.snapshot())]

    def chunk(self, chunk: EngineChunk) -> list[dict[str, Any]]:
        """The events of one engine chunk (its text, then its call pieces)."""
        events: list[dict[str, Any]] = []
        if chunk.text:
            events += self._text_delta(chunk.text)
        for delta in chunk.tool_calls:
            if delta.name is not None or delta.index not in self._calls:
                events += self._open_call(delta.index, delta.id, delta.name or "")
            index = self._calls[delta.index]
            if delta.arguments:
                self.output[index]["arguments"] += delta.arguments
                events.append(
                    self.event(
                        "response.function_call_arguments.delta",
                        item_id=self.output[index]["id"],
                        output_index=index,
                        delta=delta.arguments,
                    )
                )
        return events

    def _add(self, item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.output.append(item)
        index = len(self.output) - 1
        self._open.append(index)
        return index, self.event(
            "response.output_item.added", output_index=index, item=copy.deepcopy(item)
        )

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._text is None:
            message: dict[str, Any] = {
                "id": item_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._text, added = self._add(message)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            message["content"].append(part)
            events += [
                added,
                self.event(
                    "response.content_part.added",
                    item_id=message["id"],
                    output_index=self._text,
                    content_index=0,
                    part=copy.deepcopy(part),
                ),
            ]
        current = self.output[self._text]
        current["content"][0]["text"] += text
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=current["id"],
                output_index=self._text,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _open_call(self, engine_index: int, call_id: str | None, name: str) -> list[dict[str, Any]]:
        events = self._close_text()
        call = {
            "id": item_id("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id or item_id("call"),
            "name": name,
            "arguments": "",
        }
        self._calls[engine_index], added = self._add(call)
        return [*events, added]

    def _close_text(self) -> list[dict[str, Any]]:
        if self._text is None or self._text not in self._open:
            return []
        return self._done(self._text, "completed")

    def _done(self, index: int, status: str) -> list[dict[str, Any]]:
        self._open.remove(index)
        item = self.output[index]
        item["status"] = status
        events: list[dict[str, Any]] = []
        if item["type"] == "message":
            part = item["content"][0]
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events += [
                self.event("response.output_text.done", **common, text=part["text"], logprobs=[]),
                self.event("response.content_part.done", **common, part=copy.deepcopy(part)),
            ]
        else:
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        events.append(
            self.event("response.output_item.done", output_index=index, item=copy.deepcopy(item))
        )
        return events

    def finish(self, reason: str, usage: dict[str, Any], at: float) -> list[dict[str, Any]]:
        """Close every open item and end the response: completed, or incomplete."""
        incomplete = _INCOMPLETE.get(reason)
        item_status = "incomplete" if incomplete else "completed"
        events: list[dict[str, Any]] = []
        for index in list(self._open):
            events += self._done(index, item_status)
        self.response["usage"] = usage
        if incomplete:
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": incomplete}
            kind = "response.incomplete"
        else:
            self.response["status"] = "completed"
            self.response["completed_at"] = int(at)
            kind = "response.completed"
        return [*events, self.event(kind, response=self.snapshot())]

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        """An ``error`` event, then ``response.failed`` (the response keeps what it had)."""
        for index in list(self._open):
            self._open.remove(index)
            self.output[index]["status"] = "incomplete"
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        error = self.event("error", code=code, message=message, param=None)
        return [error, self.event("response.failed", response=self.snapshot())]

    def cancelled(self) -> None:
        """Stop where it is: open items stay incomplete, the response is ``cancelled``."""
        for index in list(self._open):
            self._open.remove(index)
            self.output[index]["status"] = "incomplete"
        self.response["status"] = "cancelled"
