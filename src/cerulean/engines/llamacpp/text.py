"""Turning a sequence's sampled token bytes into answer text.

Pieces arrive as bytes (a UTF-8 character may span tokens). The answer starts at its first
non-space character, never shows a stop string (nor anything after it) and does not end in
whitespace: trailing whitespace is held back until more text proves it is inside the answer.
"""

from __future__ import annotations

import codecs

from cerulean.engines.stops import StopMatcher

__all__ = ["TextAssembler"]


class TextAssembler:
    """Feeds token bytes in; gives out the text that is safe to show."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._matcher = StopMatcher(stops)
        self._started = False
        self._trailing = ""

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Text to emit now, and whether a stop string ended the answer."""
        text = self._decoder.decode(data)
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        out, stopped = self._matcher.feed(text)
        body = out.rstrip()
        emitted = ""
        if body:
            emitted, self._trailing = self._trailing + body, ""
        self._trailing += out[len(body) :]
        return emitted, stopped

    def finish(self, *, stopped: bool) -> str:
        """The last text: after a stop string whatever was held back belongs to the stop."""
        tail = ""
        if not stopped:
            tail = self._matcher.feed(self._decoder.decode(b"", final=True))[0]
            tail += self._matcher.flush()
        return (self._trailing + tail).rstrip()
