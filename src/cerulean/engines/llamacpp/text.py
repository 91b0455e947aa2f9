"""Turning a sequence's sampled token bytes into answer text.

Pieces arrive as bytes (a UTF-8 character may span tokens). The answer never shows a stop string
(nor anything after it). A chat answer (``trim``) also starts at its first non-space character
and does not end in whitespace: trailing whitespace is held back until more text proves it is
inside the answer. A raw completion keeps its whitespace.

The assembler also keeps count, in characters of the decoded stream, of what it has taken in
(:attr:`consumed`) and how far what it has shown reaches (:attr:`reach`), so that each token's
log probability can travel with the chunk that shows its text.
"""

from __future__ import annotations

import codecs

from cerulean.engines.llamacpp.stops import StopMatcher

__all__ = ["TextAssembler"]


class TextAssembler:
    """Feeds token bytes in; gives out the text that is safe to show."""

    def __init__(self, stops: tuple[str, ...], *, trim: bool = True) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._matcher = StopMatcher(stops)
        self._started = not trim
        self._trim = trim
        self._trailing = ""
        self.consumed = 0  # characters decoded so far
        self.reach = 0  # characters of the decoded stream shown (or skipped as leading space)

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Text to emit now, and whether a stop string ended the answer."""
        text = self._decoder.decode(data)
        self.consumed += len(text)
        if not self._started:
            kept = text.lstrip()
            self.reach += len(text) - len(kept)
            text = kept
            self._started = bool(text)
        out, stopped = self._matcher.feed(text)
        body = out.rstrip() if self._trim else out
        emitted = ""
        if body:
            emitted, self._trailing = self._trailing + body, ""
        self._trailing += out[len(body) :]
        self.reach += len(emitted)
        return emitted, stopped

    def finish(self, *, stopped: bool) -> str:
        """The last text: after a stop string whatever was held back belongs to the stop."""
        tail = ""
        if not stopped:
            rest = self._decoder.decode(b"", final=True)
            self.consumed += len(rest)
            tail = self._matcher.feed(rest)[0]
            tail += self._matcher.flush()
        last = self._trailing + tail
        if self._trim:
            last = last.rstrip()
        self.reach += len(last)
        return last
