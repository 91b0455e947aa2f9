"""A request inside the decode loop: its prompt, its choices, and how its prompt is chunked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cerulean.engines.base import EngineChunk, SamplingParams
from cerulean.engines.llamacpp.sampling import Sampler
from cerulean.engines.llamacpp.text import TextAssembler

__all__ = ["CHUNK", "Choice", "Emit", "Job"]

# Prompt chunk size: prompts are computed in chunks that end at multiples of this (or at anchors),
# less when a batch could not hold it next to one decoding token per slot.
CHUNK = 512

Emit = Callable[[list[EngineChunk | BaseException]], object]


@dataclass(eq=False)
class Choice:
    """One answer being sampled: its sequence, sampler and text so far."""

    index: int
    seq: int
    sampler: Sampler
    text: TextAssembler
    n_kv: int
    pending: int = -1
    produced: int = 0
    generated: list[int] = field(default_factory=list)
    done: bool = False


@dataclass(eq=False)
class Job:
    """One request: a prompt and how to sample ``n`` answers to it."""

    prompt: list[int]
    params: SamplingParams
    max_new: int
    stops: tuple[str, ...]
    emit: Emit
    on_admit: Callable[[], object]
    seed: int
    n: int = 1
    anchors: tuple[int, ...] = ()
    cancelled: bool = False
    # Loop-thread state.
    seqs: list[int] = field(default_factory=list)
    n_past: int = 0
    choices: list[Choice] = field(default_factory=list)
    leader: Job | None = None
    follow_k: int = 0
    chunk: int = CHUNK
    finished: int = 0
    out: list[EngineChunk | BaseException] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return not self.choices

    def boundary_at_most(self, k: int, other: Job | None = None) -> int:
        """The last chunk boundary of this prompt (and of ``other``'s) at or before ``k``."""
        marks = {a for a in self.anchors if a <= k}
        if other is not None:
            marks &= set(other.anchors)
        marks.add(k - k % self.chunk)
        return max(marks)

    def next_boundary(self, after: int) -> int:
        """Where the chunk that starts at ``after`` must end."""
        marks = [a for a in self.anchors if a > after]
        marks.append(after - after % self.chunk + self.chunk)
        return min(min(marks), len(self.prompt))
