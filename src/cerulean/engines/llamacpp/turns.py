"""Turns on the CPU for the llama.cpp contexts of one process.

Every llama.cpp context of a CPU-only server (the chat model's decode loop, the embedding
model, another registered GGUF) runs its graphs on all cores, and ggml's worker threads wait for
each other at a barrier after every graph node by spinning. Two contexts computing at once put
twice as many spinning threads on the cores: each loses its partner thread to the other's time
slices at every barrier, and both slow down far more than the shared arithmetic explains (an
embedding of a short prompt: 10 ms alone, several times that beside a full decode step).
:class:`CpuTurns` makes them take turns instead, first come first served, each turn one
``llama_decode``/``llama_encode`` call.

A turn taken with an ``interrupt`` (a decode step of batch work alone) is cut short when
someone else asks for a turn: the holder's call is interrupted between two graph nodes, so
online work — an embedding, a content-filter evaluation of an online answer — never waits for
the rest of a batch step.

No library does this: it is a fair (FIFO) lock whose holder can be asked to hurry.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

__all__ = ["CpuTurns", "turn_of"]


class CpuTurns:
    """One native computation at a time, in the order they asked (any thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._busy = False
        self._interrupt: Callable[[], None] | None = None
        self.turns = 0  # taken so far (metrics, tests)
        self.interrupted = 0  # turns cut short for someone else

    @contextmanager
    def turn(self, interrupt: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the CPU for one call; ``interrupt`` (if given) stops that call when another
        caller asks for a turn meanwhile (it must be safe to call from any thread)."""
        me = object()
        with self._cond:
            self._queue.append(me)
            if self._busy and self._interrupt is not None:
                self._interrupt()
                self._interrupt = None
                self.interrupted += 1
            while self._busy or self._queue[0] is not me:
                self._cond.wait()
            self._queue.popleft()
            self._busy = True
            self.turns += 1
            if interrupt is not None and self._queue:  # someone is already waiting
                interrupt()
                self.interrupted += 1
            else:
                self._interrupt = interrupt
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._interrupt = None
                self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Callers waiting for a turn now."""
        with self._cond:
            return len(self._queue)


def turn_of(
    turns: CpuTurns | None, interrupt: Callable[[], None] | None = None
) -> AbstractContextManager[object]:
    """A turn of ``turns`` for one native call, or nothing to wait for when there are no turns
    (a model on a GPU, an engine built alone)."""
    return nullcontext() if turns is None else turns.turn(interrupt)
