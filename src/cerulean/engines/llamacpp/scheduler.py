"""The decode loop: continuous batching over one multi-sequence llama.cpp context.

One thread owns the context. Each step it builds a single batch from the next token of every
running sequence plus chunks of pending prompts (up to ``n_batch`` tokens), runs one
``llama_decode``, and samples every sequence that has new logits with its own sampler chain.
Requests join between steps when a slot is free and leave the moment they finish or are
cancelled, freeing their slots and KV cells.

Prefix reuse happens at admission (see :mod:`.prefix`): a prompt starts from the longest cached
prefix it shares; a prompt that shares a long prefix with one still being computed waits for
that one to reach the end of the shared part and then copies it, so a system prompt that eight
concurrent chats share is computed once. ``n > 1`` computes the prompt once and copies it into
one sequence per choice.

Prompts are computed in *canonical chunks*: every chunk ends at the next multiple of
:data:`CHUNK` or at an anchor (where a message ends), and reuse is cut back to such a boundary.
So a prompt's KV is computed by the same sequence of batch shapes whether or not part of it came
from the cache, and greedy answers do not change with what the cache holds (sampled ones may; see
docs/differences.md).

Priorities: a job is ``online`` or ``batch`` (a batch job's line). Online jobs wait in their own
line and always start first; batch jobs take only the slots no online job waits for, so with no
online traffic the loop runs at its full width on batch work. An online job that finds every
slot busy preempts the newest batch jobs (they end in :class:`~cerulean.engines.base.Preempted`
and their callers run them again), so its wait does not grow with the batch's answers; while
an online prompt is being computed, batch jobs skip the steps, so that its first token is as
quick as on an idle engine, and while an online answer is generated they join only one step in
:data:`BATCH_SHARE_WHILE_ONLINE` (every sequence in a step slows a CPU's step: Azure's batch
never slows its online deployments, and here it should not either); and an online job that
arrives during a step of batch work alone interrupts that step's decode (llama.cpp stops
between two graph nodes and forgets the positions; the batch jobs decode the same tokens again
later), so it does not wait for the rest of a full-width step either.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cerulean.engines.base import EngineChunk, FinishReason, Preempted, TokenLogprob, TopLogprob
from cerulean.engines.llamacpp.jobs import CHUNK, Choice, Job
from cerulean.engines.llamacpp.kvspace import KvSpace
from cerulean.engines.llamacpp.logprobs import log_softmax_at, read_logits
from cerulean.engines.llamacpp.native import DECODE_INTERRUPTED, Batch, NativeContext, NativeModel
from cerulean.engines.llamacpp.prefix import common_prefix
from cerulean.engines.llamacpp.sampling import Sampler
from cerulean.engines.llamacpp.text import TextAssembler
from cerulean.engines.llamacpp.turns import CpuTurns, turn_of
from cerulean.errors import EngineError

__all__ = [
    "BATCH_SHARE_WHILE_ONLINE",
    "QueueFull",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerStats",
]

logger = logging.getLogger(__name__)

# A prompt follows a still-running prefill only when that saves at least this many tokens more
# than the best cached prefix would.
_LEADER_GAIN = 32
# While an online job decodes, batch jobs join one step in this many (docs/batch.md).
BATCH_SHARE_WHILE_ONLINE = 8


class QueueFull(Exception):
    """Every slot is busy and the waiting line is at its limit."""


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot for metrics, health and tests."""

    slots: int
    slots_busy: int
    waiting: int
    running: int
    kv_tokens: int
    cached_prefixes: int
    cached_tokens: int
    admitted: int
    rejected: int
    prompt_tokens_computed: int
    prompt_tokens_reused: int
    batch_running: int = 0
    batch_waiting: int = 0
    batch_preempted: int = 0
    batch_steps_interrupted: int = 0


@dataclass(frozen=True)
class SchedulerConfig:
    slots: int
    n_batch: int
    queue_size: int
    cache_entries: int
    cache_tokens: int


class Scheduler:
    """Runs every request of one model in one decode loop on its own thread."""

    def __init__(
        self,
        model: NativeModel,
        ctx: NativeContext,
        config: SchedulerConfig,
        *,
        turns: CpuTurns | None = None,
    ) -> None:
        self._model = model
        self._turns = turns
        self._ctx = ctx
        self._config = config
        self._batch = Batch(config.n_batch)
        self._chunk = max(16, min(CHUNK, config.n_batch - config.slots))
        # Logits rows beyond one per slot: what an echoed prompt's log probabilities may use.
        self._score_rows = max(1, ctx.config.n_outputs - config.slots)
        self._kv = KvSpace(
            ctx, n_swa=model.n_swa, entries=config.cache_entries, tokens=config.cache_tokens
        )
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()  # online jobs
        self._batch_waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._busy = 0
        self._closed = False
        self._admitted = 0
        self._rejected = 0
        self._computed = 0
        self._reused = 0
        self._preempted = 0
        self._interrupted = 0
        self._online_steps = 0  # decode steps with an online job (batch jobs join 1 in 8)
        self._interruptible = False  # a decode of batch work alone is running (lock held)
        self._thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        threads = ctx.config.n_threads
        self._pool_threads = (
            ThreadPoolExecutor(threads, thread_name_prefix="llama-sample") if threads > 1 else None
        )

    # -- any thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` when the waiting line is full (batch jobs
        have a line of their own, which their runner keeps short)."""
        with self._cond:
            if self._closed:
                raise EngineError("the engine is shut down")
            if job.batch:
                self._batch_waiting.append(job)
                self._cond.notify()
                return
            # Waiting jobs take the free slots first; beyond those, at most queue_size may wait.
            ahead = sum(waiting.n for waiting in self._waiting)
            if ahead + job.n > self.slots - self._busy + self._config.queue_size:
                self._rejected += 1
                raise QueueFull()
            self._waiting.append(job)
            if self._interruptible:  # batch work alone is decoding: the online job goes first
                self._ctx.interrupt()
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Stop ``job`` wherever it is; its slots and KV cells are freed before the next step."""
        with self._cond:
            job.cancelled = True
            for line in (self._waiting, self._batch_waiting):
                if job in line:
                    line.remove(job)
            self._cond.notify()

    @property
    def slots(self) -> int:
        return self._config.slots

    def requests(self) -> int:
        """Online requests (jobs) running or waiting now (batch jobs make way for them)."""
        with self._cond:
            return sum(1 for job in self._active if not job.batch) + len(self._waiting)

    def stats(self) -> SchedulerStats:
        with self._cond:
            return SchedulerStats(
                slots=self.slots,
                slots_busy=self._busy,
                waiting=len(self._waiting) + len(self._batch_waiting),
                running=len(self._active),
                kv_tokens=sum(_kv_tokens(job) for job in self._active),
                cached_prefixes=len(self._kv.cache),
                cached_tokens=self._kv.cache.tokens,
                admitted=self._admitted,
                rejected=self._rejected,
                prompt_tokens_computed=self._computed,
                prompt_tokens_reused=self._reused,
                batch_running=sum(1 for job in self._active if job.batch),
                batch_waiting=len(self._batch_waiting),
                batch_preempted=self._preempted,
                batch_steps_interrupted=self._interrupted,
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if self._pool_threads is not None:
            self._pool_threads.shutdown()
        self._batch.close()

    # -- loop thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._has_work():
                    self._cond.wait()
                if self._closed:
                    break
                admitted = self._take_admissible()
            try:
                self._reap()
                if self._preempt():  # the online job takes the freed slots in this very step
                    with self._cond:
                        admitted += self._take_admissible()
                while admitted:
                    self._start(admitted.pop(0))
                self._step()
            except Exception as exc:  # a native failure: fail what runs, keep serving
                logger.exception("decode loop step failed")
                for job in admitted:  # reserved, never started
                    with self._cond:
                        self._busy -= job.n
                    job.out.append(EngineError(f"generation failed: {exc}"))
                    self._notify(job.on_admit, job)
                    self._flush_job(job)
                self._fail_all(exc)
        for job in list(self._active):
            job.out.append(EngineError("the engine is shutting down"))
            self._release(job)
        self._flush()

    def _has_work(self) -> bool:
        return bool(self._active) or self._head_fits()

    def _head_fits(self) -> bool:
        """Whether the next job's slots are free: the first online one, else (none waiting)
        the first batch one (lock held)."""
        line = self._waiting or self._batch_waiting
        return bool(line) and self._busy + line[0].n <= self.slots

    def _take_admissible(self) -> list[Job]:
        """Pop waiting jobs while their slots are free: online ones first come first served,
        batch ones only while no online job waits (lock held)."""
        taken: list[Job] = []
        while self._head_fits():
            job = (self._waiting or self._batch_waiting).popleft()
            self._busy += job.n  # reserved now, so submit() never sees a free slot twice
            taken.append(job)
        return taken

    def _preempt(self) -> bool:
        """Free slots for the first waiting online job by ending the newest batch jobs;
        whether any was ended."""
        with self._cond:
            if not self._waiting:
                return False
            short = self._busy + self._waiting[0].n - self.slots
        ended = False
        for job in reversed(list(self._active)):
            if short <= 0:
                break
            if not job.batch or job.cancelled:
                continue
            short -= job.n
            job.out.append(Preempted("made way for an online request"))
            job.cancelled = True
            with self._cond:
                self._preempted += 1
            self._release(job)
            ended = True
        return ended

    def _start(self, job: Job) -> None:
        if job.cancelled:
            with self._cond:
                self._busy -= job.n
            return
        job.chunk = self._chunk
        # A seeded, sampled request that runs alone starts from an empty KV cache: its cells then
        # sit where they would on a fresh server, so the attention kernel sums in the same order
        # and the same seed gives the same answer whatever was cached before (docs/engine.md).
        reproducible = _reproducible(job) and not self._active
        if reproducible:
            self._kv.clear()
        self._active.append(job)  # from here on, _release gives everything back
        for _ in range(job.n):
            job.seqs.append(self._kv.take())
        with self._cond:
            self._admitted += 1
        if not job.score_prompt and not reproducible:  # a scored prompt is computed anew
            self._plan_reuse(job)
        self._notify(job.on_admit, job)

    # -- prefix reuse -------------------------------------------------------------------------

    def _plan_reuse(self, job: Job) -> None:
        """Start ``job`` from the best cached prefix, or make it wait for a running prefill."""
        limit = len(job.prompt) - 1  # the last prompt token is always computed, for its logits
        best_k, source = self._kv.best_cached(job.prompt, job.boundary_at_most)
        leader, leader_k = None, best_k + _LEADER_GAIN
        for other in self._active:
            if other is job or not other.prefilling or other.cancelled or other.score_prompt:
                continue
            if other.batch and not job.batch:  # batch jobs sit out while an online one prefills
                continue
            k = job.boundary_at_most(min(common_prefix(other.prompt, job.prompt), limit), other)
            if k < self._kv.cache.min_tokens:
                continue
            if other.n_past >= k and k > best_k and other.leader is None:
                if self._kv.continuable(other.seqs[0], k):
                    best_k, source = k, other.seqs[0]
            elif other.n_past < k and k >= leader_k:
                leader, leader_k = other, k
        if leader is not None and leader_k >= best_k + _LEADER_GAIN:
            job.leader, job.follow_k = leader, leader_k
            return
        self._copy_prefix(job, source, best_k)

    def _copy_prefix(self, job: Job, source: int, k: int) -> None:
        self._kv.copy(source, job.seqs[0], k)
        job.n_past = k
        with self._cond:
            self._reused += k

    def _follow(self, job: Job) -> bool:
        """Whether ``job`` may compute now; copies its leader's prefix once it is there."""
        leader = job.leader
        assert leader is not None
        if leader.cancelled or leader not in self._active:
            job.leader = None
            self._plan_reuse(job)
            return job.leader is None
        if leader.n_past < job.follow_k:
            return False
        job.leader = None
        k = job.follow_k
        self._copy_prefix(job, leader.seqs[0], k if self._kv.continuable(leader.seqs[0], k) else 0)
        return True

    # -- one step -----------------------------------------------------------------------------

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        yielding = self._batch_sits_out()
        decoding: list[tuple[Job, Choice, int]] = []
        for job in self._active:
            if yielding and job.batch:
                continue
            for choice in job.choices:
                if not choice.done:
                    index = batch.add(choice.pending, choice.n_kv, choice.seq, logits=True)
                    decoding.append((job, choice, index))
        prefilling: list[tuple[Job, int, int]] = []
        scoring: list[tuple[Job, int, int, int]] = []  # job, first position, end, first row
        spare = self._score_rows
        for job in self._active:
            if batch.room == 0:
                break
            if yielding and job.batch:
                continue
            if not job.prefilling or (job.leader is not None and not self._follow(job)):
                continue
            every = job.score_prompt
            end = job.next_boundary(job.n_past)
            if every:  # as many positions as there are logits rows to spare
                end = min(end, job.n_past + spare)
            if end - job.n_past > batch.room or end <= job.n_past:
                continue  # only whole chunks: a smaller one may still fit
            last = len(job.prompt) - 1
            seq = job.seqs[0]
            first = batch.n_tokens
            for pos in range(job.n_past, end):
                batch.add(job.prompt[pos], pos, seq, logits=every or pos == last)
            if every:
                spare -= end - job.n_past
                scoring.append((job, job.n_past, end, first))
            prefilling.append((job, end, batch.n_tokens - 1))
        if batch.n_tokens == 0:
            time.sleep(0.001)  # only followers waiting on a cancelled leader; re-planned next step
            return
        if not self._decode(decoding, prefilling):
            return  # interrupted for an online job: nothing was computed, nothing advances
        for _, choice, _ in decoding:
            choice.n_kv += 1
        for job, start, end, first in scoring:
            self._score_prompt(job, start, end, first)
        for job, end, index in prefilling:
            decoding.extend((job, choice, index) for choice in self._prefilled(job, end))
        tokens = self._sample([(choice.sampler, index) for _, choice, index in decoding])
        for (job, choice, row), token in zip(decoding, tokens, strict=True):
            self._advance(job, choice, token, row)
        self._flush()

    def _batch_sits_out(self) -> bool:
        """Whether batch jobs skip this step: while an online job runs they join only one
        step in :data:`BATCH_SHARE_WHILE_ONLINE` (keeping their slots and KV), so an online
        answer is computed at nearly an idle engine's speed — on a CPU every sequence in a
        step slows the step — and batch work still moves; never while an online prompt is
        being computed (its first token is as quick as on an idle engine)."""
        online = [job for job in self._active if not job.batch]
        if not online:
            return False
        if any(job.prefilling for job in online):
            return True
        self._online_steps += 1
        return self._online_steps % BATCH_SHARE_WHILE_ONLINE != 0

    def _sample(self, work: list[tuple[Sampler, int]]) -> list[int]:
        """Sample every sequence; spread over the CPU threads when there are several.

        Each draw is a llama.cpp call that releases the GIL, and the decode that would use those
        threads has finished, so the sequences of a big batch are sampled side by side.
        """
        ctx = self._ctx.ptr
        if len(work) < 4 or self._pool_threads is None:
            return [sampler.sample(ctx, index) for sampler, index in work]
        return list(self._pool_threads.map(lambda item: item[0].sample(ctx, item[1]), work))

    def _decode(
        self,
        decoding: list[tuple[Job, Choice, int]],
        prefilling: list[tuple[Job, int, int]],
    ) -> bool:
        """Run the step's batch; False when an online job interrupted a step of batch work
        alone (its positions are then forgotten, so the same tokens can be decoded again)."""
        batch_only = all(job.batch for job, _, _ in decoding) and all(
            job.batch for job, _, _ in prefilling
        )
        interruptible = batch_only and self._ctx.interruptible
        if interruptible:
            with self._cond:
                if self._waiting:  # an online job came while the step was planned
                    return False
                self._interruptible = True
        try:
            rc = self._run_decode(self._ctx.interrupt if interruptible else None)
        finally:
            if interruptible:
                with self._cond:
                    self._interruptible = False
                    self._ctx.interrupt(stop=False)
        if rc == DECODE_INTERRUPTED and interruptible:
            # llama.cpp forgets the interrupted micro-batch's positions; earlier micro-batches
            # of the same call stay, so every sequence is cut back to where this step began.
            for _, choice, _ in decoding:
                self._ctx.seq_rm(choice.seq, choice.n_kv)
            for job, _, _ in prefilling:
                self._ctx.seq_rm(job.seqs[0], job.n_past)
            with self._cond:
                self._interrupted += 1
            return False
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")
        return True

    def _run_decode(self, interrupt: Callable[[], None] | None) -> int:
        """llama_decode, making room in the KV cache while it is full; its last status. On the
        CPU it takes its turn with the process's other llama.cpp contexts; ``interrupt``: a
        step of batch work alone, which another context's turn may cut short."""
        while True:
            with turn_of(self._turns, interrupt):
                rc = self._ctx.decode(self._batch)
            # 1: the KV cache is full; make room and try the same batch again.
            if rc != 1 or not self._kv.evict():
                return rc

    def _prefilled(self, job: Job, end: int) -> list[Choice]:
        """Account for a computed chunk; at the prompt's end, fork it into the choices."""
        with self._cond:
            self._computed += end - job.n_past
        job.n_past = end
        if end in job.anchors:
            self._kv.pin(job.seqs[0], job.prompt[:end])
        if end < len(job.prompt):
            return []
        for i, seq in enumerate(job.seqs):
            if i:
                self._kv.copy(job.seqs[0], seq, end)
            sampler = Sampler(
                job.params,
                seed=job.seed + i,
                vocab=self._model.vocab,
                n_vocab=self._model.n_vocab,
                window=job.max_new,
            )
            text = TextAssembler(job.stops, trim=job.trim)
            job.choices.append(Choice(i, seq, sampler, text, n_kv=end))
        if job.echo is not None:
            scores = self._prompt_head(job) + tuple(job.prompt_scores)
            for choice in job.choices:
                job.out.append(EngineChunk(text=job.echo, index=choice.index, logprobs=scores))
        if job.max_new == 0:  # nothing to generate (an echoed prompt scored for its logprobs)
            for choice in list(job.choices):
                self._finish(job, choice, "length", stopped=False)
            return []
        return job.choices

    def _score_prompt(self, job: Job, start: int, end: int, first: int) -> None:
        """Log probabilities of prompt tokens ``start + 1 .. end`` from the rows of a chunk."""
        k = job.params.logprobs or 0
        for pos in range(start, min(end, len(job.prompt) - 1)):
            job.prompt_scores.append(self._score(job.prompt[pos + 1], first + pos - start, k))

    def _prompt_head(self, job: Job) -> tuple[TokenLogprob, ...]:
        """The first prompt token: nothing predicts it (no entry at all for an added BOS)."""
        if not job.score_prompt or job.prompt[0] == self._model.bos:
            return ()
        shown, data = self._model.display(job.prompt[0])
        return (TokenLogprob(token=shown, logprob=None, bytes=data),)

    def _advance(self, job: Job, choice: Choice, token: int, row: int) -> None:
        if self._model.is_eog(token):
            self._finish(job, choice, "stop", stopped=False)
            return
        choice.produced += 1
        choice.generated.append(token)
        if job.params.logprobs is not None:  # before the next decode overwrites the logits
            choice.scored.append(
                (choice.text.consumed, self._score(token, row, job.params.logprobs))
            )
        text, stopped = choice.text.feed(self._model.piece(token))
        if text:
            job.out.append(EngineChunk(text=text, index=choice.index, logprobs=choice.release()))
        if stopped:
            self._finish(job, choice, "stop", stopped=True)
        elif choice.produced >= job.max_new:
            self._finish(job, choice, "length", stopped=False)
        else:
            choice.pending = token

    def _score(self, token: int, row: int, k: int) -> TokenLogprob:
        """``token``'s log probability (and the ``k`` likeliest) from the logits of ``row``."""
        model = self._model
        logits = read_logits(self._ctx.ptr, row, model.n_vocab)
        logprob, best = log_softmax_at(logits, token, k)
        top: list[TopLogprob] = []
        for alternative, alternative_logprob in best:
            shown, data = model.display(alternative)
            top.append(TopLogprob(token=shown, logprob=alternative_logprob, bytes=data))
        shown, data = model.display(token)
        return TokenLogprob(token=shown, logprob=logprob, bytes=data, top=tuple(top))

    def _finish(self, job: Job, choice: Choice, reason: FinishReason, *, stopped: bool) -> None:
        choice.done = True
        text = choice.text.finish(stopped=stopped)
        job.out.append(
            EngineChunk(
                text=text,
                finish_reason=reason,
                index=choice.index,
                prompt_tokens=len(job.prompt),
                completion_tokens=choice.produced,
                logprobs=choice.release(everything=not stopped),
            )
        )
        job.finished += 1
        if job.finished == job.n:
            self._complete(job)

    def _complete(self, job: Job) -> None:
        """A finished job's first answer stays cached: the chat's next turn starts with it."""
        first = job.choices[0]
        # What its KV holds: the prompt and the answer tokens decoded so far (the last one
        # sampled was never decoded unless the model ended the answer itself).
        tokens = job.prompt + first.generated[: first.n_kv - len(job.prompt)]
        # A scored prompt's KV was computed in other chunks than the canonical ones: not kept.
        if not job.score_prompt and self._kv.adopt(first.seq, tokens):
            job.seqs.remove(first.seq)  # now owned by the cache
        self._release(job)

    # -- leaving ------------------------------------------------------------------------------

    def _reap(self) -> None:
        for job in [j for j in self._active if j.cancelled]:
            logger.debug("request cancelled after %d prompt tokens", job.n_past)
            self._release(job)

    def _release(self, job: Job) -> None:
        for choice in job.choices:
            choice.sampler.close()
        for seq in job.seqs:
            self._kv.give(seq)
        job.seqs.clear()
        if job in self._active:
            self._active.remove(job)
            with self._cond:
                self._busy -= job.n
        self._flush_job(job)

    def _fail_all(self, exc: BaseException) -> None:
        for job in list(self._active):
            job.out.append(EngineError(f"generation failed: {exc}"))
            self._release(job)
        self._kv.clear()

    def _flush(self) -> None:
        for job in self._active:
            self._flush_job(job)

    def _flush_job(self, job: Job) -> None:
        if job.out:
            out, job.out = job.out, []
            self._notify(job.emit, job, out)

    @staticmethod
    def _notify(callback: Callable[..., object], job: Job, *args: object) -> None:
        try:
            callback(*args)
        except RuntimeError:  # the request's event loop is gone: nobody is listening
            job.cancelled = True


def _kv_tokens(job: Job) -> int:
    if job.choices:
        return sum(c.n_kv for c in job.choices)
    return job.n_past


def _reproducible(job: Job) -> bool:
    """Whether ``job`` asked for a repeatable sampled answer (an explicit seed, temperature > 0)."""
    return job.params.seed is not None and job.params.temperature > 0
