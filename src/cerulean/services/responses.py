"""The Responses API: create (plain, streamed, background), retrieve, delete, cancel, input
items, stream resumption, and the retention purge (docs/responses.md).

Generation goes through chat's path (:func:`cerulean.services.chat.start_generation`): the same
engine interface, the same rate limits and ``x-ratelimit-*`` headers, the same real-usage
settlement. A stored response keeps the conversation its next turn continues (earlier turns,
its input, its output), so ``previous_response_id`` gives the model the whole history, function
calls and their outputs included, without walking the chain.

:func:`run_response_request` runs one request body for other services (the batch runner).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from cerulean.engines.base import (
    ChatMessage,
    Engine,
    EngineChunk,
    GenerationRequest,
    Priority,
    ResponseFormat,
    SamplingParams,
    Tools,
)
from cerulean.errors import (
    APIError,
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
    ObjectNotFound,
)
from cerulean.protocol.apiversions import V1, ApiVersion
from cerulean.protocol.ids import completion_id
from cerulean.protocol.responses import CreateResponseRequest, parse_response_request
from cerulean.services.admission import Quota
from cerulean.services.answers import Answer, InferenceCall
from cerulean.services.chat import (
    Started,
    close_generation,
    require_json_word,
    screen_prompt,
    start_generation,
)
from cerulean.services.response_events import Shaper, usage_body
from cerulean.services.response_items import (
    chat_messages,
    echo_tools,
    read_format,
    read_input,
    read_response_tools,
)
from cerulean.store.base import ResponseRecord, Store

if TYPE_CHECKING:
    from cerulean.state import AppState

__all__ = [
    "BackgroundRuns",
    "ResponsesContext",
    "cancel_response",
    "create_response",
    "delete_response",
    "encode_event",
    "get_response",
    "list_input_items",
    "prepare_store",
    "resume_stream",
    "run_response_request",
    "upkeep",
]

logger = logging.getLogger(__name__)

_FINISHED = frozenset({"completed", "incomplete", "failed", "cancelled"})
_RUNNING = frozenset({"queued", "in_progress"})
_CONTINUABLE = frozenset({"completed", "incomplete"})


# -- background runs ------------------------------------------------------------------------------


class _Run:
    """A background response being generated: its events so far, for any number of readers."""

    def __init__(self, turn: _Turn) -> None:
        self.turn = turn
        self.events: list[dict[str, Any]] = []
        self.finished = False
        self._changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    async def push(self, events: list[dict[str, Any]]) -> None:
        async with self._changed:
            self.events.extend(events)
            self._changed.notify_all()

    async def finish(self) -> None:
        async with self._changed:
            self.finished = True
            self._changed.notify_all()

    async def follow(self, after: int) -> AsyncIterator[dict[str, Any]]:
        """Events numbered above ``after``, then the new ones as they come, to the end."""
        index = max(after + 1, 0)  # sequence numbers are list positions
        while True:
            async with self._changed:
                while index >= len(self.events) and not self.finished:
                    await self._changed.wait()
                batch = self.events[index:]
                done = self.finished
            index += len(batch)
            for event in batch:
                yield event
            if done and index >= len(self.events):
                return


def _runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass
class BackgroundRuns:
    """The background responses this process is running, by id; ``runner`` names the process
    in the store (its heartbeats keep its runs alive there)."""

    runs: dict[str, _Run] = field(default_factory=dict)
    runner: str = field(default_factory=_runner_name)

    async def aclose(self) -> None:
        """Cancel every run (the server stops); each is stored as cancelled."""
        await asyncio.gather(*(_cancel_run(run) for run in list(self.runs.values())))


@dataclass(frozen=True)
class ResponsesContext:
    """Where responses are kept and for how long, and who runs the background ones."""

    store: Store
    runs: BackgroundRuns
    retention: timedelta
    runner: str  # this process (host, pid and a random part)
    clock: Callable[[], float]
    heartbeat: float = 10.0  # seconds between heartbeats; three missed: the run died

    @classmethod
    def of(cls, state: AppState) -> ResponsesContext:
        settings = state.settings
        return cls(
            store=state.store,
            runs=state.responses,
            retention=timedelta(days=settings.response_retention_days),
            runner=state.responses.runner,
            clock=state.clock,
            heartbeat=settings.response_heartbeat,
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)


# -- one turn -------------------------------------------------------------------------------------


@dataclass
class _Turn:
    """One response being made: its generation, its shape so far, what to store."""

    ctx: ResponsesContext
    call: InferenceCall[Engine]
    started: Started
    shaper: Shaper
    context: list[dict[str, Any]]  # what the model read (earlier turns and this input)
    input_items: list[dict[str, Any]]
    store: bool
    created: datetime
    closed: bool = False

    @property
    def response(self) -> dict[str, Any]:
        return self.shaper.response

    async def drive(self) -> AsyncIterator[dict[str, Any]]:
        """The response's events from ``response.created`` to its end."""
        for event in self.shaper.opening():
            yield event
        final: EngineChunk | None = None
        async for chunk in self.started.generation:
            self.started.meter.add(chunk)
            for event in self.shaper.chunk(chunk):
                yield event
            if chunk.finish_reason is not None:
                final = chunk
        if final is None:
            raise EngineError("the engine ended without a finish reason")
        usage = usage_body(final.prompt_tokens, final.completion_tokens)
        for event in self.shaper.finish(final.finish_reason or "stop", usage, self.ctx.clock()):
            yield event

    def failed(self, exc: Exception) -> list[dict[str, Any]]:
        """The events of a failure after the response started."""
        if isinstance(exc, APIError):
            logger.info("response %s failed: %s", self.response["id"], exc.message)
            return self.shaper.fail("server_error", exc.message)
        logger.error("response %s failed", self.response["id"], exc_info=exc)
        return self.shaper.fail("server_error", "The server had an error processing the response.")

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await close_generation(self.started, self.call)

    async def save(self, events: list[dict[str, Any]] | None = None) -> None:
        """Store the response as it is now (when ``store`` is on)."""
        if not self.store:
            return
        output = [item for item in self.response["output"] if item["status"] != "in_progress"]
        record = ResponseRecord(
            id=self.response["id"],
            deployment=self.call.deployment.name,
            status=self.response["status"],
            created_at=self.created,
            expires_at=self.created + self.ctx.retention,
            body=json.dumps(self.response),
            input_items=json.dumps(self.input_items),
            conversation=json.dumps([*self.context, *output]),
            events=None if events is None else json.dumps(events),
            runner=self.ctx.runner if self.response["background"] else None,
            heartbeat=self.ctx.now() if self.response["background"] else None,
        )
        await asyncio.to_thread(self.ctx.store.put_response, record)


# -- create ---------------------------------------------------------------------------------------


async def create_response(
    ctx: ResponsesContext, call: InferenceCall[Engine], body: CreateResponseRequest
) -> Answer:
    """Admit and start one response (Azure's errors before any output), shaped as the request
    asks: a JSON body, an event stream, or a background run."""
    store = body.store is not False
    if body.background and not store:
        raise InvalidRequest("Background mode requires 'store' to be true.", param="background")
    history = await _history(ctx, body.previous_response_id, call.deployment.name)
    items = read_input(body.input)
    tools = read_response_tools(body.tools, body.tool_choice, body.parallel_tool_calls)
    fmt, fmt_echo = read_format(body.text)
    messages = chat_messages(body.instructions, [*history, *items])
    if fmt is not None and fmt.kind == "json_object":
        require_json_word(tuple(messages))
    params = SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=body.max_output_tokens,
    )
    await screen_prompt(call, messages)  # the deployment's policy: Azure's 400 when filtered
    started = await _start(call, messages, params, tools, fmt, truncate=body.truncation == "auto")
    started = _filtered(call, started, stream=bool(body.stream or body.background))
    created = ctx.now()
    response = _base(body, call, tools, fmt_echo, store, int(created.timestamp()))
    turn = _Turn(ctx, call, started, Shaper(response), [*history, *items], items, store, created)
    headers = {**started.headers, "x-ms-deployment-name": call.deployment.name}
    if body.background:
        return await _background(turn, headers, stream=bool(body.stream))
    if body.stream:
        return _answer(headers, stream=True, turn=turn, events=lambda: _streamed(turn))
    return _answer(headers, stream=False, turn=turn, collect=lambda: _collected(turn))


def _answer(
    headers: dict[str, str],
    *,
    stream: bool,
    turn: _Turn,
    events: Callable[[], AsyncIterator[bytes]] | None = None,
    collect: Callable[[], Any] | None = None,
) -> Answer:
    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""  # pragma: no cover

    async def no_body() -> dict[str, Any]:
        return turn.shaper.snapshot()

    return Answer(
        headers=headers,
        stream=stream,
        collect=collect or no_body,
        events=events or nothing,
        aclose=turn.close,
    )


def _base(
    body: CreateResponseRequest,
    call: InferenceCall[Engine],
    tools: Tools | None,
    fmt_echo: dict[str, Any],
    store: bool,
    created: int,
) -> dict[str, Any]:
    """The response object before any output (``queued`` in the background)."""
    response: dict[str, Any] = {
        "id": completion_id("resp_"),
        "object": "response",
        "created_at": created,
        "status": "queued" if body.background else "in_progress",
        "background": bool(body.background),
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": call.engine.info.name,
        "output": [],
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt_echo},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": echo_tools(tools),
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "metadata": dict(body.metadata or {}),
    }
    if body.user is not None:
        response["user"] = body.user
    return response


async def _history(
    ctx: ResponsesContext, previous: str | None, deployment: str
) -> list[dict[str, Any]]:
    """The conversation ``previous`` continues (empty without one); Azure-shaped 400s for an
    unknown, deleted, expired, unfinished or other deployment's response."""
    if previous is None:
        return []
    record = await asyncio.to_thread(ctx.store.get_response, previous, ctx.now())
    if record is None:
        raise InvalidRequest(
            f"Previous response with id '{previous[:100]}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if record.deployment != deployment:
        raise InvalidRequest(
            f"Previous response with id '{previous}' was created by deployment "
            f"'{record.deployment}'; continue it on that deployment, not '{deployment}'.",
            param="previous_response_id",
            code="invalid_value",
        )
    if record.status not in _CONTINUABLE:
        raise InvalidRequest(
            f"Previous response with id '{previous}' is {record.status}; only a completed or "
            "incomplete response can be continued.",
            param="previous_response_id",
            code="invalid_value",
        )
    history: list[dict[str, Any]] = json.loads(record.conversation)
    return history


async def _start(
    call: InferenceCall[Engine],
    messages: list[ChatMessage],
    params: SamplingParams,
    tools: Tools | None,
    fmt: ResponseFormat | None,
    *,
    truncate: bool,
) -> Started:
    """Start the generation; with ``truncation: auto`` drop the oldest turns until it fits."""
    while True:
        wanted = GenerationRequest(
            messages=tuple(messages), params=params, tools=tools, response_format=fmt
        )
        try:
            return await start_generation(call, wanted)
        except ContextLengthExceeded:
            if not truncate or not _drop_oldest(messages):
                raise


def _filtered(call: InferenceCall[Engine], started: Started, *, stream: bool) -> Started:
    """The generation with the deployment's completion filter, as chat has it: a filtered
    answer ends ``incomplete`` with ``incomplete_details.reason`` ``content_filter`` and its
    text withheld (docs/content-filtering.md). The asynchronous mode's annotation chunks have
    no place in Responses events, so a stream is filtered in released segments."""
    content_filter = call.content_filter
    if content_filter is None or not content_filter.active:
        return started
    generation = content_filter.wrap(started.generation, stream=stream, segments_only=True)
    return replace(started, generation=generation)


def _drop_oldest(messages: list[ChatMessage]) -> bool:
    """Remove the oldest non-system message (and tool results left without their call);
    whether anything could go (the last message always stays)."""
    first = next((i for i, m in enumerate(messages) if m.role != "system"), None)
    if first is None or first == len(messages) - 1:
        return False
    del messages[first]
    while first < len(messages) - 1 and messages[first].role == "tool":
        del messages[first]
    return True


async def _collected(turn: _Turn) -> dict[str, Any]:
    try:
        async for _event in turn.drive():
            pass
    finally:
        await turn.close()
    await turn.save()
    return turn.shaper.snapshot()


def encode_event(event: dict[str, Any]) -> bytes:
    """One event as OpenAI streams it: ``event: <type>`` and ``data: <JSON>``."""
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


async def _streamed(turn: _Turn) -> AsyncIterator[bytes]:
    """A plain (not background) stream; it ends without ``[DONE]``, as OpenAI's does. A client
    that goes away cancels the generation, and nothing is stored."""
    try:
        try:
            async for event in turn.drive():
                yield encode_event(event)
        except (APIError, EngineError) as exc:
            for event in turn.failed(exc):
                yield encode_event(event)
        await turn.close()
        await turn.save()
    finally:
        await turn.close()


async def _background(turn: _Turn, headers: dict[str, str], *, stream: bool) -> Answer:
    """Store the response as queued, run it in a task, and answer at once (or stream it)."""
    await turn.save()
    run = _Run(turn)
    runs = turn.ctx.runs
    runs.runs[turn.response["id"]] = run
    run.task = asyncio.create_task(_run_in_background(run))
    queued = turn.shaper.snapshot()

    async def events() -> AsyncIterator[bytes]:
        async for event in run.follow(-1):
            yield encode_event(event)

    async def collect() -> dict[str, Any]:
        return queued

    async def keep_running() -> None:  # a client going away does not stop a background run
        return None

    return Answer(headers, stream, collect, events, keep_running)


async def _run_in_background(run: _Run) -> None:
    turn = run.turn
    try:
        started = False
        async for event in turn.drive():
            await run.push([event])
            if not started and turn.response["status"] == "in_progress":
                started = True
                await turn.save()
    except asyncio.CancelledError:
        turn.shaper.cancelled()
        await _end(run)
        raise
    except (APIError, EngineError) as exc:
        await run.push(turn.failed(exc))
    except Exception as exc:
        await run.push(turn.failed(exc))
    await _end(run)


async def _end(run: _Run) -> None:
    turn = run.turn
    try:
        await turn.close()
        await turn.save(run.events)
    finally:
        await run.finish()
        turn.ctx.runs.runs.pop(turn.response["id"], None)


# -- retrieve, delete, cancel, input items, resume ------------------------------------------------


async def _record(ctx: ResponsesContext, response_id: str) -> ResponseRecord:
    record = await asyncio.to_thread(ctx.store.get_response, response_id, ctx.now())
    if record is None:
        raise ObjectNotFound("Response", response_id)
    return record


async def get_response(ctx: ResponsesContext, response_id: str) -> dict[str, Any]:
    """The stored response (a running background one as it is now); 404 when unknown."""
    run = ctx.runs.runs.get(response_id)
    record = await _record(ctx, response_id)
    if run is not None:
        return run.turn.shaper.snapshot()
    if _stale(ctx, record):
        record = await _fail(ctx, record)
    body: dict[str, Any] = json.loads(record.body)
    return body


def _stale(ctx: ResponsesContext, record: ResponseRecord) -> bool:
    """Whether a queued or running response's server stopped beating (it died)."""
    if record.status not in _RUNNING or record.id in ctx.runs.runs:
        return False
    beat = record.heartbeat or record.created_at
    return beat < ctx.now() - timedelta(seconds=3 * ctx.heartbeat)


async def _fail(ctx: ResponsesContext, record: ResponseRecord) -> ResponseRecord:
    """Record an interrupted run as failed (its server stopped during the run)."""
    body = json.loads(record.body)
    body["status"] = "failed"
    body["error"] = {"code": "server_error", "message": "The server stopped during the run."}
    for item in body.get("output", []):
        if item.get("status") == "in_progress":
            item["status"] = "incomplete"
    failed = dataclasses.replace(record, status="failed", body=json.dumps(body))
    await asyncio.to_thread(ctx.store.put_response, failed)
    logger.info("background response %s was interrupted: marked failed", record.id)
    return failed


async def resume_stream(
    ctx: ResponsesContext, response_id: str, starting_after: int | None
) -> AsyncIterator[bytes]:
    """A background response's events after ``starting_after`` (all without it), following
    a running one to its end. Refused (400) for a response that did not run in the background."""
    record = await _record(ctx, response_id)
    run = ctx.runs.runs.get(response_id)
    after = -1 if starting_after is None else starting_after
    if run is not None:
        source = run.follow(after)
    elif record.events is not None:
        source = _replay(json.loads(record.events), after)
    else:
        raise InvalidRequest(
            "This response cannot be streamed because it was not created with background=true"
            " (or it was interrupted before it finished).",
            param="stream",
        )

    async def events() -> AsyncIterator[bytes]:
        async for event in source:
            yield encode_event(event)

    return events()


async def _replay(events: list[dict[str, Any]], after: int) -> AsyncIterator[dict[str, Any]]:
    for event in events:
        if event["sequence_number"] > after:
            yield event


async def delete_response(ctx: ResponsesContext, response_id: str) -> dict[str, Any]:
    """Delete a response (a running background one is cancelled first); 404 when unknown."""
    await _record(ctx, response_id)
    run = ctx.runs.runs.get(response_id)
    if run is not None:
        await _cancel_run(run)
    if not await asyncio.to_thread(ctx.store.delete_response, response_id):
        raise ObjectNotFound("Response", response_id)
    return {"id": response_id, "object": "response", "deleted": True}


async def _cancel_run(run: _Run) -> None:
    """Stop a run and wait until it is stored as cancelled (also one that never started)."""
    if run.task is not None and not run.task.done():
        run.task.cancel()
        await asyncio.wait([run.task])
    if not run.finished:  # cancelled before its first step: nothing ran its ending
        run.turn.shaper.cancelled()
        await _end(run)


async def cancel_response(ctx: ResponsesContext, response_id: str) -> dict[str, Any]:
    """Cancel a background response; idempotent (a finished one is answered as it is)."""
    record = await _record(ctx, response_id)
    body: dict[str, Any] = json.loads(record.body)
    if not body.get("background"):
        raise InvalidRequest(
            "Cannot cancel a response that was not created with background=true.",
            param="response_id",
        )
    run = ctx.runs.runs.get(response_id)
    if run is not None:
        await _cancel_run(run)
        return run.turn.shaper.snapshot()
    if _stale(ctx, record):
        record = await _fail(ctx, record)
    if record.status in _FINISHED:
        finished: dict[str, Any] = json.loads(record.body)
        return finished
    # Running on another replica: recorded as cancelled, which that replica reads at its next
    # heartbeat and stops the run (upkeep).
    body["status"] = "cancelled"
    await asyncio.to_thread(
        ctx.store.put_response,
        dataclasses.replace(record, status="cancelled", body=json.dumps(body)),
    )
    return body


async def list_input_items(
    ctx: ResponsesContext,
    response_id: str,
    *,
    after: str | None = None,
    before: str | None = None,
    limit: int = 20,
    order: str = "desc",
) -> dict[str, Any]:
    """A page of the response's input items (newest first by default)."""
    if not 1 <= limit <= 100:
        raise InvalidRequest(
            f"Invalid 'limit': integer {limit} is out of range: expected 1 to 100.",
            param="limit",
        )
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Invalid value: '{order[:40]}'. Supported values are: 'asc' and 'desc'.",
            param="order",
        )
    record = await _record(ctx, response_id)
    items: list[dict[str, Any]] = json.loads(record.input_items)
    if order == "desc":
        items.reverse()
    ids = [item["id"] for item in items]
    if after is not None:
        items = items[ids.index(after) + 1 :] if after in ids else []
    if before is not None:
        cut = [item["id"] for item in items]
        items = items[: cut.index(before)] if before in cut else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


# -- the store's upkeep ---------------------------------------------------------------------------


async def prepare_store(ctx: ResponsesContext) -> None:
    """At startup: purge expired responses, and mark interrupted background runs failed."""
    await purge(ctx)
    await _fail_stale(ctx)


async def _fail_stale(ctx: ResponsesContext) -> None:
    before = ctx.now() - timedelta(seconds=3 * ctx.heartbeat)
    for record in await asyncio.to_thread(ctx.store.stale_responses, before):
        if record.id not in ctx.runs.runs:
            await _fail(ctx, record)


async def _cancelled_elsewhere(ctx: ResponsesContext) -> None:
    """Stop this process's runs that a cancel on another replica marked cancelled."""
    for response_id, run in list(ctx.runs.runs.items()):
        record = await asyncio.to_thread(ctx.store.get_response, response_id, ctx.now())
        if record is None or record.status == "cancelled":
            await _cancel_run(run)


async def purge(ctx: ResponsesContext) -> int:
    """Delete the responses whose retention is over; how many."""
    count = await asyncio.to_thread(ctx.store.purge_responses, ctx.now())
    if count:
        logger.info("purged %d expired stored response(s)", count)
    return count


async def upkeep(ctx: ResponsesContext, purge_interval: float) -> None:
    """For as long as the server runs: beat for this process's background runs, mark runs
    whose server stopped beating failed, and purge expired responses every ``purge_interval``."""
    last_purge = ctx.clock()
    while True:
        await asyncio.sleep(ctx.heartbeat)
        try:
            if ctx.runs.runs:
                await asyncio.to_thread(ctx.store.touch_responses, ctx.runner, ctx.now())
                await _cancelled_elsewhere(ctx)
            await _fail_stale(ctx)
            if ctx.clock() - last_purge >= purge_interval:
                last_purge = ctx.clock()
                await purge(ctx)
        except Exception:
            logger.exception("upkeep of stored responses failed")


# -- for other services ---------------------------------------------------------------------------


async def run_response_request(
    state: AppState,
    body: Mapping[str, Any],
    *,
    request_id: str,
    quota: Quota | None = None,
    version: ApiVersion = V1,
    priority: Priority = "online",
) -> tuple[int, dict[str, Any]]:
    """Run one Responses API request body to the end, as ``POST /openai/v1/responses`` would:
    the deployment named by ``model``; the result's HTTP status and JSON body (the response
    object, or an Azure-shaped error). ``stream`` and ``background`` are refused (400).

    ``quota`` charges the rate limits (default: the deployment's online limits, as a request
    would); the response is stored unless ``store`` is false.
    """
    try:
        request = parse_response_request(json.dumps(body).encode())
        if request.stream or request.background:
            raise InvalidRequest(
                "'stream' and 'background' are not available here.", param="stream"
            )
        if request.model is None:
            raise InvalidRequest("'model' is a required property", param="model")
        deployment = await state.pool.resolve(request.model, "chat_completion")
        limits = quota or Quota(
            state.limiter,
            state.clock,
            version.text,
            max_answer_tokens=state.settings.max_answer_tokens,
        )
        call = InferenceCall(
            deployment.record,
            deployment.generator,
            version,
            limits,
            request_id,
            content_filter=await state.content_safety.filter_for(deployment.record),
            priority=priority,
        )
        answer = await create_response(ResponsesContext.of(state), call, request)
        return 200, await answer.collect()
    except APIError as exc:
        return exc.status_code, exc.body()
