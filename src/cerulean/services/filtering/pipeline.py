"""The content-filter pipeline: a deployment's policy applied to its prompts before generation
and to its completions as they are generated.

:class:`ContentSafety` (one per app) holds the classifiers and a short-lived cache of policies
and compiled blocklists; :meth:`ContentSafety.filter_for` gives a request its
:class:`ContentFilter`. The prompt side raises Azure's 400 (:class:`ContentFiltered`); the
completion side wraps the engine's :class:`Generation` in :class:`FilteredGeneration`, which
holds each choice's text back until it has passed (Azure's default streaming mode: content
released in segments after they pass; a JSON answer is judged whole), or, for a policy in mode
``Asynchronous_filter``, lets text through at once and follows it with annotation chunks
(``content_filter_offsets``). A filtered choice ends with ``finish_reason: "content_filter"``
and none of its withheld text; other choices go on.

Annotations list only what was evaluated: a category without a classifier is left out, and an
answer of which nothing was evaluated carries Azure's "not filtered" form (:data:`NOT_FILTERED`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from starlette.concurrency import run_in_threadpool

from cerulean.engines.base import EngineChunk, Generation, TokenLogprob
from cerulean.engines.embedding import EmbeddingEngine
from cerulean.errors import ContentFiltered
from cerulean.services.filtering.classifiers import (
    HEAD_FILE,
    BlocklistMatcher,
    HarmClassifier,
    HarmHead,
    JailbreakDetector,
    TextClassifier,
    WindowCache,
)
from cerulean.services.filtering.policy import (
    BUILTIN_POLICIES,
    CATEGORIES,
    DEFAULT_POLICY,
    SEVERITY_RANK,
    Policy,
    Severity,
    Side,
    builtin,
    effective_policy,
)
from cerulean.store.base import DeploymentRecord, Store

__all__ = [
    "NOT_FILTERED",
    "ContentFilter",
    "ContentSafety",
    "Evaluation",
    "FilteredGeneration",
    "harm_classifier",
]

logger = logging.getLogger(__name__)

# Azure's annotation for content its filter did not evaluate (docs concepts/content-filter.md):
# a policy that evaluates nothing, or an engine's answer no filter saw. Never "safe".
NOT_FILTERED: dict[str, Any] = {
    "error": {"code": "content_filter_error", "message": "The contents are not filtered"}
}
SEGMENT = 100  # characters a streamed choice holds back before a check (default mode)
ASYNC_SEGMENT = 200  # characters between annotation chunks (asynchronous mode)
# Characters before a completion's unchecked text that the harm classifier rereads with it: the
# words a segment boundary may have cut off. More would reread most of the last segment every
# time (each segment cost three times its own text with 200), and the harm classifier's reading
# is what filtering costs (docs/benchmarks.md, "Content filtering").
HARM_OVERLAP = 40


@dataclass(frozen=True)
class Evaluation:
    """The annotations of one text and whether it is filtered."""

    results: dict[str, Any]
    filtered: bool


@dataclass
class ContentFilter:
    """One request's filter: its deployment's policy, blocklists and the classifiers."""

    policy: Policy
    blocklists: dict[str, BlocklistMatcher]
    harm: TextClassifier | None
    shield: JailbreakDetector

    @property
    def active(self) -> bool:
        """Whether the policy evaluates anything (else annotations say "not filtered")."""
        return self.policy.evaluates_anything

    @property
    def screens_completions(self) -> bool:
        """Whether anything evaluates completions: a completion blocklist, or a harm category
        on with its classifier loaded (otherwise text streams as it comes, unannotated)."""
        if self.policy.completion_blocklists:
            return True
        rules = self.policy.completion
        return self.harm is not None and any(
            c in rules and rules[c].enabled for c in self.harm.categories
        )

    async def evaluate(
        self,
        text: str,
        side: Side,
        *,
        shield_text: str | None = None,
        harm_texts: Sequence[str] | None = None,
    ) -> Evaluation:
        """``text``'s annotations on ``side``: the blocklists read all of it, the shield
        ``shield_text`` (what users wrote), the harm classifier ``harm_texts`` (a prompt's
        messages one by one, each category taking the worst; a completion's newest part: what
        earlier checks have not seen), both ``text`` when not given."""
        rules = self.policy.rules(side)
        results: dict[str, Any] = {}
        filtered = False
        wanted = [c for c in CATEGORIES if c in rules and rules[c].enabled]
        if wanted and self.harm is not None:
            read = [t for t in (harm_texts or ()) if t.strip()] or [text]
            severities = worst(await self.harm.classify(read))
            for category in wanted:
                if category not in severities:
                    continue  # no classifier for it: not evaluated, not annotated
                severity = severities[category]
                hit = rules[category].filters(severity)
                results[category] = {"filtered": hit, "severity": severity}
                filtered |= hit
        shield = rules.get("jailbreak")
        if side == "Prompt" and shield is not None and shield.enabled:
            detected = self.shield.detect(text if shield_text is None else shield_text)
            hit = detected and shield.blocking
            results["jailbreak"] = {"filtered": hit, "detected": detected}
            filtered |= hit
        uses = self.policy.blocklists(side)
        if uses:
            details = []
            for use in uses:
                matcher = self.blocklists.get(use.name.lower())
                if matcher is not None and matcher.matches(text):
                    details.append({"filtered": use.blocking, "id": matcher.name})
            hit = any(d["filtered"] for d in details)
            results["custom_blocklists"] = {"filtered": hit, "details": details}
            filtered |= hit
        if not results:
            return Evaluation(dict(NOT_FILTERED), False)
        return Evaluation(dict(sorted(results.items())), filtered)

    async def check_prompts(
        self,
        texts: Sequence[str],
        shield_texts: Sequence[str] | None = None,
        harm_texts: Sequence[Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Each prompt's ``prompt_filter_results`` entry; Azure's 400 for the first filtered.
        ``harm_texts``: each prompt's messages, which the harm classifier reads one by one
        (so a conversation's earlier turns and a repeated system prompt come from its cache)."""
        out = []
        for i, text in enumerate(texts):
            shield = shield_texts[i] if shield_texts is not None else None
            parts = harm_texts[i] if harm_texts is not None else None
            evaluation = await self.evaluate(text, "Prompt", shield_text=shield, harm_texts=parts)
            if evaluation.filtered:
                raise ContentFiltered(evaluation.results)
            out.append({"prompt_index": i, "content_filter_results": evaluation.results})
        return out

    def wrap(
        self, generation: Generation, *, stream: bool, segments_only: bool = False
    ) -> Generation:
        """The generation with its completions filtered (a no-op for a policy that evaluates
        nothing on the completion side); ``segments_only``: never the asynchronous mode (an
        API whose events cannot carry its annotations)."""
        if not self.screens_completions:
            return generation
        if not stream:
            mode = "whole"
        elif self.policy.asynchronous and not segments_only:
            mode = "async"
        else:
            mode = "segments"
        return FilteredGeneration(generation, self, mode)


@dataclass
class _ChoiceState:
    pending: str = ""  # text not yet released (default mode) or not yet checked (async)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    released: str = ""  # text the client has (or, async, the text checked so far)
    sent: int = 0  # async: characters sent
    blocked: dict[str, Any] | None = None  # the triggering result once filtered
    last: dict[str, Any] | None = None  # the last evaluation's results
    upstream: Any = None  # the engine server's own latest results (an Azure upstream's)


class FilteredGeneration(Generation):
    """An engine generation seen through a content filter (see the module's docstring)."""

    def __init__(self, inner: Generation, content_filter: ContentFilter, mode: str) -> None:
        self._inner = inner
        self._filter = content_filter
        self._mode = mode
        self.prompt_tokens = getattr(inner, "prompt_tokens", 0)
        self.screened: list[Any] | None = None  # the edge's own prompt results

    @property
    def prompt_filter_results(self) -> list[Any] | None:
        """The edge's prompt results, merged over an upstream's (an Azure upstream's own)."""
        upstream = self._inner.prompt_filter_results
        if not upstream or not self.screened:
            return self.screened or upstream
        theirs = {e.get("prompt_index", 0): e.get("content_filter_results", {}) for e in upstream}
        return [
            {
                **e,
                "content_filter_results": merge(
                    theirs.get(e["prompt_index"]), e["content_filter_results"]
                ),
            }
            for e in self.screened
        ]

    @prompt_filter_results.setter
    def prompt_filter_results(self, value: list[Any] | None) -> None:
        self.screened = value

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> AsyncIterator[EngineChunk]:
        return self._chunks()

    async def _check(self, state: _ChoiceState, text: str, new: int) -> Evaluation:
        """Check a choice's ``text`` so far, of which the last ``new`` characters are unchecked:
        the harm classifier reads those with an overlap of 200 before them."""
        recent = text[-(new + HARM_OVERLAP) :] if new + HARM_OVERLAP < len(text) else text
        evaluation = await self._filter.evaluate(text, "Completion", harm_texts=[recent])
        state.last = evaluation.results
        return evaluation

    async def _chunks(self) -> AsyncIterator[EngineChunk]:
        states: dict[int, _ChoiceState] = {}
        async for chunk in self._inner:
            state = states.setdefault(chunk.index, _ChoiceState())
            if chunk.filter_results:
                state.upstream = chunk.filter_results
            if state.blocked is not None:  # withheld: drain to the end for the usage
                if chunk.finish_reason is not None:
                    yield _blocked(chunk, state.blocked)
                continue
            if self._mode == "async":
                async for out in self._async(chunk, state):
                    yield out
            else:
                async for out in self._held(chunk, state):
                    yield out

    async def _held(self, chunk: EngineChunk, state: _ChoiceState) -> AsyncIterator[EngineChunk]:
        """Default mode: text held back until it passes (JSON: the whole answer at once)."""
        state.pending += chunk.text
        state.logprobs.extend(chunk.logprobs)
        final = chunk.finish_reason is not None
        due = final or (self._mode == "segments" and len(state.pending) >= SEGMENT)
        if not due:
            if chunk.tool_calls:
                yield replace(chunk, text="", logprobs=())
            return
        evaluation = await self._check(state, state.released + state.pending, len(state.pending))
        if evaluation.filtered:
            state.blocked = evaluation.results
            if final:
                yield _blocked(chunk, state.blocked)
            return
        text, state.released, state.pending = state.pending, state.released + state.pending, ""
        logprobs, state.logprobs = tuple(state.logprobs), []
        results = merge(state.upstream, evaluation.results)
        yield replace(chunk, text=text, logprobs=logprobs, filter_results=results)

    async def _async(self, chunk: EngineChunk, state: _ChoiceState) -> AsyncIterator[EngineChunk]:
        """Asynchronous mode: text goes out at once; annotation chunks follow every segment."""
        final = chunk.finish_reason is not None
        state.pending += chunk.text
        if chunk.text or chunk.tool_calls or chunk.logprobs:
            yield (
                replace(chunk, finish_reason=None, filter_results={})
                if final
                else replace(chunk, filter_results={})
            )
            state.sent += len(chunk.text)
        if not (final or len(state.pending) >= ASYNC_SEGMENT):
            return
        start = len(state.released)
        state.released += state.pending
        state.pending = ""
        evaluation = await self._check(state, state.released, len(state.released) - start)
        offsets = {"check_offset": start, "start_offset": start, "end_offset": len(state.released)}
        if evaluation.filtered:
            state.blocked = evaluation.results
            if final:
                yield _blocked(chunk, evaluation.results)
            return
        results = merge(state.upstream, evaluation.results)
        yield EngineChunk(index=chunk.index, filter_results=results, filter_offsets=offsets)
        if final:
            yield replace(chunk, text="", logprobs=(), tool_calls=(), filter_results={})


def merge(upstream: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """An engine server's own results (an Azure upstream's) with the edge's over them."""
    if not upstream:
        return ours
    if ours == NOT_FILTERED:
        return dict(upstream)
    theirs = {k: v for k, v in dict(upstream).items() if k != "error"}
    return dict(sorted({**theirs, **ours}.items()))


def _blocked(chunk: EngineChunk, results: dict[str, Any]) -> EngineChunk:
    """A filtered choice's last chunk: no text, ``content_filter``, the engine's usage."""
    return EngineChunk(
        index=chunk.index,
        finish_reason="content_filter",
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        filter_results=results,
    )


# -- per app: classifiers and the cache -----------------------------------------------------------


@lru_cache(maxsize=1)
def _head() -> HarmHead | None:
    try:
        return HarmHead.load()
    except (OSError, ValueError, KeyError):
        logger.warning("content filter: no harm classifier head (%s)", HEAD_FILE)
        return None


def worst(severities: Sequence[Mapping[str, Severity]]) -> dict[str, Severity]:
    """Each category's highest severity over several texts."""
    out: dict[str, Severity] = {}
    for one in severities:
        for category, severity in one.items():
            if category not in out or SEVERITY_RANK[severity] > SEVERITY_RANK[out[category]]:
                out[category] = severity
    return out


def harm_classifier(
    embedders: Mapping[str, EmbeddingEngine], cache: WindowCache | None = None
) -> TextClassifier | None:
    """The harm classifier when the embedding model its head was trained on is loaded and
    ready; None otherwise (the harm categories are then not evaluated, and not annotated).
    ``cache``: the app's windows already read (:class:`WindowCache`)."""
    head = _head()
    if head is None:
        return None
    embedder = embedders.get(head.embedding_model)
    if embedder is None or not embedder.ready or embedder.info.dimensions != head.weights.shape[1]:
        return None
    return HarmClassifier(embedder, head, cache)


@dataclass
class _Cached:
    value: Any
    at: float


class ContentSafety:
    """The classifiers and a cache of policies and blocklists (``ttl`` seconds; writes through
    this server clear it at once, other processes' writes show within ``ttl``)."""

    def __init__(
        self,
        store: Store,
        *,
        harm: Callable[[], TextClassifier | None],
        shield: JailbreakDetector | None = None,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._harm = harm
        self._shield = shield or JailbreakDetector()
        self._ttl = ttl
        self._clock = clock
        self._policies: dict[str, _Cached] = {}
        self._lists: dict[str, _Cached] = {}
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._policies.clear()
        self._lists.clear()

    async def filter_for(self, deployment: DeploymentRecord) -> ContentFilter:
        policy = await self._policy(deployment.rai_policy or DEFAULT_POLICY)
        names = {u.name.lower() for u in (*policy.prompt_blocklists, *policy.completion_blocklists)}
        lists = {}
        for name in names:
            matcher = await self._blocklist(name)
            if matcher is not None:
                lists[name] = matcher
        return ContentFilter(policy, lists, self._harm(), self._shield)

    def _fresh(self, entry: _Cached | None) -> bool:
        return entry is not None and self._clock() - entry.at < self._ttl

    async def _policy(self, name: str) -> Policy:
        known = builtin(name)
        if known is not None:
            return known
        entry = self._policies.get(name.lower())
        if not self._fresh(entry):
            record = await run_in_threadpool(self._store.get_rai_policy, name)
            if record is None:  # deleted under the deployment: the default applies
                policy = BUILTIN_POLICIES[DEFAULT_POLICY]
            else:
                policy = effective_policy(record.name, json.loads(record.properties))
            entry = _Cached(policy, self._clock())
            self._policies[name.lower()] = entry
        assert entry is not None
        policy_value: Policy = entry.value
        return policy_value

    async def _blocklist(self, name: str) -> BlocklistMatcher | None:
        entry = self._lists.get(name)
        if not self._fresh(entry):
            matcher = await run_in_threadpool(self._load_blocklist, name)
            entry = _Cached(matcher, self._clock())
            self._lists[name] = entry
        assert entry is not None
        value: BlocklistMatcher | None = entry.value
        return value

    def _load_blocklist(self, name: str) -> BlocklistMatcher | None:
        record = self._store.get_blocklist(name)
        if record is None:
            return None
        items = self._store.list_blocklist_items(record.name)
        return BlocklistMatcher(record.name, [(i.pattern, i.is_regex) for i in items])
