"""A request inside the decode loop: its prompt, its choices, and how its prompt is chunked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cerulean.engines.base import EngineChunk, SamplingParams, TokenLogprob
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
    # Log probabilities not yet sent, with where each token's text starts in the decoded stream.
    scored: list[tuple[int, TokenLogprob]] = field(default_factory=list)

    def release(self, *, everything: bool = False) -> tuple[TokenLogprob, ...]:
        """The scored tokens whose text has started to show (all of them with ``everything``).

        Tokens held back with their text (a possible stop string, trailing space) travel with the
        chunk that shows it; those of a stop string never do.
        """
        if not self.scored:
            return ()
        reach = self.text.reach
        cut = len(self.scored)
        if not everything:
            cut = sum(1 for start, _ in self.scored if start < reach)
        out = tuple(entry for _, entry in self.scored[:cut])
        del self.scored[:cut]
        return out


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
    trim: bool = True  # chat answers drop edge whitespace; raw completions keep it
    echo: str | None = None  # text every answer starts with (the prompt's)
    batch: bool = False  # low priority: runs on idle slots, preempted for online jobs
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
    prompt_scores: list[TokenLogprob] = field(default_factory=list)  # of prompt tokens 1..

    @property
    def prefilling(self) -> bool:
        return not self.choices

    @property
    def score_prompt(self) -> bool:
        """Whether the echoed prompt carries log probabilities (every position's logits)."""
        return self.echo is not None and self.params.logprobs is not None

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
