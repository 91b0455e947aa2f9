"""Batch jobs: creation and the API's views (:class:`BatchService`), validation of an input
file, and the runner that executes the lines at low priority (:class:`BatchRunner`).

Life of a batch (docs/batch.md): ``validating`` (a runner leases it, reads the input file, checks
every line and the deployment's batch quota, and stores the lines in one transaction) →
``in_progress`` (runners lease pending lines, run each through the deployment's engine with
priority ``batch`` and checkpoint its output line) → ``finalizing`` (the runner that sees the
last line done writes the output and error files) → ``completed``; or ``failed`` (validation),
``cancelling`` → ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from cerulean.engines.base import Preempted
from cerulean.errors import (
    APIError,
    EngineError,
    InternalServerError,
    InvalidRequest,
    NotCancellable,
    ObjectNotFound,
    ServerBusy,
    ServiceUnavailable,
)
from cerulean.protocol.apiversions import V1, ApiVersion, parse_api_version
from cerulean.protocol.batches import BATCH_ENDPOINTS, CreateBatchRequest
from cerulean.protocol.chat import parse_chat_request
from cerulean.protocol.ids import request_id
from cerulean.quota.base import RateLimiter
from cerulean.services import chat
from cerulean.services.admission import Quota
from cerulean.services.answers import InferenceCall
from cerulean.services.files import FileService
from cerulean.services.pool import EnginePool
from cerulean.settings import Settings
from cerulean.store.base import DeploymentRecord, Store
from cerulean.store.batches import BatchRecord, ClaimedLine, JobStore, OverQuota

if TYPE_CHECKING:
    from cerulean.services.filtering.pipeline import ContentSafety
    from cerulean.state import AppState

__all__ = [
    "BATCH_SKUS",
    "CANCELLABLE",
    "BatchRunner",
    "BatchService",
    "LineFailed",
    "batch_object",
    "responses_handler",
    "validate_lines",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_SKUS = ("GlobalBatch", "DataZoneBatch")
WINDOW_SECONDS = 24 * 3600
_MAX_ERRORS = 20  # validation errors reported per batch
_DEFAULT_ANSWER_TOKENS = 256  # enqueued-token estimate of a line without max_tokens
_TERMINAL = ("completed", "failed", "expired", "cancelled")
CANCELLABLE = ("validating", "in_progress")  # the statuses a cancel moves to "cancelling"
_PURGE_INTERVAL = 300.0  # seconds between purges of expired files
_IDLE_SLOWDOWN = 5  # an idle runner looks once in this many poll intervals at most


def _now() -> int:
    return int(time.time())


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


# -- the wire object ------------------------------------------------------------------------------


def batch_object(record: BatchRecord, counts: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The wire ``batch`` object; ``counts`` (lines, done, errors) while it runs."""
    if counts is None or record.status in _TERMINAL:
        total, completed, failed = record.total, record.completed, record.failed
    else:
        total, done, errors = counts
        completed, failed = done - errors, errors
    errors_list = json.loads(record.errors) if record.errors else None
    body: dict[str, Any] = {
        "id": record.id,
        "object": "batch",
        "endpoint": record.endpoint,
        "errors": None if errors_list is None else {"object": "list", "data": errors_list},
        "input_file_id": record.input_file_id,
        "completion_window": record.completion_window,
        "status": record.status,
        "output_file_id": record.output_file_id,
        "error_file_id": record.error_file_id,
        "created_at": record.created_at,
        "in_progress_at": record.in_progress_at,
        "expires_at": record.expires_at,
        "finalizing_at": record.finalizing_at,
        "completed_at": record.completed_at,
        "failed_at": record.failed_at,
        "expired_at": record.expired_at,
        "cancelling_at": record.cancelling_at,
        "cancelled_at": record.cancelled_at,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": record.metadata_dict,
    }
    if record.deployment is not None:
        body["model"] = record.deployment
    return body


# -- the API --------------------------------------------------------------------------------------


class BatchService:
    """Create, read, list and cancel batches (the runners do the rest)."""

    def __init__(self, jobs: JobStore, files: FileService, wake: Callable[[], None]) -> None:
        self._jobs = jobs
        self._files = files
        self._wake = wake

    async def create(self, body: CreateBatchRequest, version: ApiVersion) -> dict[str, Any]:
        if body.endpoint not in BATCH_ENDPOINTS:
            raise InvalidRequest(
                f"Invalid value: '{body.endpoint}'. Supported values are: "
                + ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS)
                + ".",
                param="endpoint",
                code="invalid_value",
            )
        if body.completion_window != "24h":
            raise InvalidRequest(
                f"Invalid value: '{body.completion_window}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        _check_metadata(body.metadata)
        source = await self._files.get(body.input_file_id)
        if source.purpose != "batch":
            raise InvalidRequest(
                f"File {source.id} has purpose '{source.purpose}'; a batch needs a file of "
                "purpose 'batch'.",
                param="input_file_id",
                code="invalid_request",
            )
        now = _now()
        record = BatchRecord(
            id=new_batch_id(),
            input_file_id=source.id,
            endpoint=body.endpoint,
            completion_window=body.completion_window,
            api_version=version.text,
            status="validating",
            created_at=now,
            expires_at=now + WINDOW_SECONDS,
            metadata=None if body.metadata is None else json.dumps(body.metadata),
            output_expires_after=(
                None if body.output_expires_after is None else body.output_expires_after.seconds
            ),
        )
        await asyncio.to_thread(self._jobs.put_batch, record)
        self._wake()
        return batch_object(record)

    async def get(self, batch_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self._jobs.get_batch, batch_id)
        if record is None:
            raise ObjectNotFound("Batch", batch_id)
        counts = None
        if record.status not in _TERMINAL:
            counts = await asyncio.to_thread(self._jobs.line_counts, batch_id)
        return batch_object(record, counts)

    async def listing(self, *, after: str | None, limit: int) -> dict[str, Any]:
        records = await asyncio.to_thread(self._jobs.list_batches, after=after, limit=limit + 1)
        data = [await self._view(r) for r in records[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(records) > limit,
        }

    async def _view(self, record: BatchRecord) -> dict[str, Any]:
        if record.status in _TERMINAL:
            return batch_object(record)
        return batch_object(record, await asyncio.to_thread(self._jobs.line_counts, record.id))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self._jobs.get_batch, batch_id)
        if record is None:
            raise ObjectNotFound("Batch", batch_id)
        if record.status in ("cancelling", "cancelled"):
            return await self.get(batch_id)
        moved = await asyncio.to_thread(
            self._jobs.update_batch,
            batch_id,
            statuses=CANCELLABLE,
            status="cancelling",
            cancelling_at=_now(),
        )
        if not moved:
            current = await asyncio.to_thread(self._jobs.get_batch, batch_id)
            status = current.status if current is not None else record.status
            if status not in ("cancelling", "cancelled"):
                raise NotCancellable(status)
        self._wake()
        return await self.get(batch_id)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > 16:
        raise InvalidRequest("'metadata' may have at most 16 keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest(
                "'metadata' keys have at most 64 characters and values at most 512.",
                param="metadata",
            )


# -- validation -----------------------------------------------------------------------------------


@dataclass
class Validated:
    """A checked input file: its lines (line number, custom_id, the line's body as JSON text),
    the deployment they name, the enqueued-token estimate, or the errors found."""

    lines: list[tuple[int, str, str]]
    model: str | None
    tokens: int
    errors: list[dict[str, Any]]


def _error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _same_url(url: object, endpoint: str) -> bool:
    if not isinstance(url, str):
        return False
    return url.removeprefix("/v1") == endpoint.removeprefix("/v1")


def _line_tokens(body: dict[str, Any]) -> int:
    """Enqueued tokens of one request: its prompt at four characters a token plus its answer
    budget (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``)."""
    prompt = body.get("messages", body.get("input", ""))
    chars = len(json.dumps(prompt, ensure_ascii=False))
    budget = next(
        (
            body[k]
            for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
            if isinstance(body.get(k), int)
        ),
        _DEFAULT_ANSWER_TOKENS,
    )
    return (chars + 3) // 4 + max(int(budget), 0)


def validate_lines(raw_lines: Iterator[bytes], endpoint: str, max_lines: int) -> Validated:
    """Check every line of an input file (Azure's codes, with line numbers)."""
    out = Validated([], None, 0, [])
    seen: set[str] = set()
    count = 0
    for number, raw in enumerate(raw_lines, start=1):
        if len(out.errors) >= _MAX_ERRORS:
            break
        if not raw.strip():
            continue
        count += 1
        if count > max_lines:
            out.errors.append(
                _error(
                    "too_many_tasks",
                    f"The input file has more than {max_lines} requests; split it into "
                    "several batches.",
                )
            )
            break
        try:
            text = raw.decode("utf-8")
            if text.startswith("\ufeff"):
                raise ValueError("a byte order mark (save the file as UTF-8 without BOM)")
            item = json.loads(text)
            if not isinstance(item, dict):
                raise ValueError("the line is not a JSON object")
        except (ValueError, RecursionError) as exc:
            out.errors.append(
                _error("invalid_json_line", f"Line {number} is not valid JSON: {exc}.", number)
            )
            continue
        problem = _line_problem(item, number, endpoint, seen, out.model)
        if problem is not None:
            out.errors.append(problem)
            continue
        custom_id, body = item["custom_id"], item["body"]
        seen.add(custom_id)
        out.model = out.model or body["model"]
        out.tokens += _line_tokens(body)
        out.lines.append((number, custom_id, json.dumps(body, ensure_ascii=False)))
    return out


def _line_problem(
    item: dict[str, Any], number: int, endpoint: str, seen: set[str], model: str | None
) -> dict[str, Any] | None:
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _error(
            "invalid_request", f"Line {number} has no 'custom_id' string.", number, "custom_id"
        )
    if item.get("method") != "POST":
        return _error(
            "invalid_request", f"Line {number}: 'method' must be 'POST'.", number, "method"
        )
    if not _same_url(item.get("url"), endpoint):
        return _error(
            "url_mismatch",
            f"Line {number}: the url {item.get('url')!r} does not match the batch's endpoint "
            f"'{endpoint}'.",
            number,
            "url",
        )
    body = item.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _error(
            "invalid_request",
            f"Line {number}: 'body' must be an object naming the deployment in 'model'.",
            number,
            "body.model",
        )
    if custom_id in seen:
        return _error(
            "duplicate_custom_id",
            f"Line {number}: the custom_id '{custom_id}' is used on an earlier line; each "
            "request needs its own.",
            number,
            "custom_id",
        )
    if model is not None and body["model"] != model:
        return _error(
            "model_mismatch",
            f"Line {number} names deployment '{body['model']}', earlier lines '{model}'; every "
            "line of a batch must use the same deployment.",
            number,
            "body.model",
        )
    if body.get("stream"):
        return _error(
            "invalid_request",
            f"Line {number}: batch requests cannot stream.",
            number,
            "body.stream",
        )
    return None


def batch_token_limit(record: DeploymentRecord, settings: Settings) -> int:
    """A deployment's enqueued-token quota: a GlobalBatch/DataZoneBatch deployment's capacity
    (thousands of tokens), else ``batch_token_limit``."""
    if record.sku in BATCH_SKUS:
        return record.capacity * 1000
    return settings.batch_token_limit


# -- the runner -----------------------------------------------------------------------------------


class _BatchQuota(Quota):
    """Batch lines are charged to the batch quota when validated, never to online TPM."""

    async def admit(
        self, record: DeploymentRecord, *, tokens: int, capability: Any
    ) -> dict[str, str]:
        return {}

    async def settle(self, record: DeploymentRecord, *, charged: int, used: int) -> None:
        return None


LineHandler = Callable[[dict[str, Any], ApiVersion, str], Awaitable[dict[str, Any]]]


class LineFailed(Exception):
    """A line handler's non-200 answer: its status and Azure-shaped body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _version(text: str) -> ApiVersion:
    return parse_api_version(text) or V1


def _model_not_found(model: str) -> dict[str, Any]:
    return _error(
        "model_not_found",
        f"The deployment '{model}' named by the input file's lines does not exist.",
        param="body.model",
    )


def _over_quota(tokens: int, queued: int, limit: int) -> dict[str, Any]:
    return _error(
        "token_limit_exceeded",
        f"The batch's {tokens} enqueued tokens, with the {queued} of the deployment's other "
        f"batches, exceed its enqueued-token limit of {limit}. Wait for a batch to finish, or "
        "split this one.",
    )


class BatchRunner:
    """Runs batch work in this server: validation, lines, finalization (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        jobs: JobStore,
        files: FileService,
        pool: EnginePool,
        limiter: RateLimiter,
        *,
        content_safety: ContentSafety | None = None,
    ) -> None:
        self._settings = settings
        self._content_safety = content_safety  # the deployments' content filters
        self._store = store
        self._jobs = jobs
        self._files = files
        self._pool = pool
        self._limiter = limiter
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._inflight: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._renewed = 0.0
        self._records: dict[str, BatchRecord] = {}  # batches of in-flight lines
        # The runner's store calls have threads of their own: online requests' work in the
        # default executor (tokenizing prompts) never waits behind a batch checkpoint.
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="batch-store")
        self.handlers: dict[str, LineHandler] = {"chat": self._chat_line}

    async def _db(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(func, *args, **kwargs))

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def width(self) -> int:
        """Lines kept in flight: ``batch_width``, else the largest engine's slots and a quarter
        more, so that a freed slot finds the next line already waiting in the engine."""
        if self._settings.batch_width is not None:
            return self._settings.batch_width
        slots = max((e.stats().get("slots", 0) for e in self._pool.engines.values()), default=1)
        return max(slots + max(slots // 4, 1), 2)

    async def run(self) -> None:
        if not self._jobs.postgres:  # SQLite: one runner; whatever held a lease before died
            await self._db(self._jobs.release_leases)
        purged = 0.0
        idle = 0  # looks in a row that found no batch to work on
        try:
            while True:
                interval = self._settings.batch_poll_interval
                try:
                    if time.monotonic() - purged > _PURGE_INTERVAL:
                        purged = time.monotonic()
                        await self._db(self._files.purge_expired)
                    idle = 0 if await self._tick() else idle + 1
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("batch runner step failed")
                    await asyncio.sleep(interval)
                # Idle, it looks less and less often, down to one look in _IDLE_SLOWDOWN
                # intervals: its queries would otherwise take CPU from the engines every
                # interval (a batch created through this server wakes it at once).
                wait = interval * min(2 ** max(idle - 2, 0), _IDLE_SLOWDOWN)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                self._wakeup.clear()
        finally:
            for task in self._inflight.values():
                task.cancel()
            self._threads.shutdown(wait=False)

    async def _tick(self) -> bool:
        """One look for work; whether there was any (a batch open or lines in flight)."""
        lease = self._settings.batch_lease_seconds
        validated = await self._validate_one(lease)
        opened = await self._watch(lease)
        room = self.width - len(self._inflight)
        if room > 0 and self._pool.engines:
            claimed = await self._db(self._jobs.claim_lines, self.owner, room, time.time(), lease)
            for line in claimed:
                self._spawn(line)
        return validated or opened or bool(self._inflight)

    def _spawn(self, line: ClaimedLine) -> None:
        key = (line.batch_id, line.line)
        task = asyncio.create_task(self._run_line(line))
        self._inflight[key] = task

        def done(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(key, None)
            self._wakeup.set()

        task.add_done_callback(done)

    # -- validation ---------------------------------------------------------------------------

    async def _validate_one(self, lease: float) -> bool:
        record = await self._db(
            self._jobs.claim_batch, ("validating",), self.owner, time.time(), lease
        )
        if record is None:
            return False
        await self._db(self._validate, record)
        self._wakeup.set()
        return True

    def _validate(self, record: BatchRecord) -> None:
        source = self._jobs.get_file(record.input_file_id)
        path = self._files.path(record.input_file_id)
        if source is None or not path.exists():
            self._fail(record, [_error("invalid_request", "The input file no longer exists.")])
            return
        if source.bytes == 0:
            self._fail(record, [_error("empty_file", "The input file is empty.")])
            return
        with path.open("rb") as handle:
            checked = validate_lines(iter(handle), record.endpoint, self._settings.batch_max_lines)
        if not checked.errors and not checked.lines:
            checked.errors.append(_error("empty_batch", "The input file has no requests."))
        if checked.errors:
            self._fail(record, checked.errors)
            return
        assert checked.model is not None
        deployment = self._store.get_deployment(checked.model)
        if deployment is None or deployment.name != checked.model:
            self._fail(record, [_model_not_found(checked.model)])
            return
        limit = batch_token_limit(deployment, self._settings)
        try:
            started = self._jobs.start_batch(  # counts the others in the same transaction
                record.id,
                self.owner,
                checked.lines,
                deployment=checked.model,
                tokens=checked.tokens,
                now=_now(),
                token_limit=limit,
            )
        except OverQuota as over:
            self._fail(record, [_over_quota(checked.tokens, over.queued, limit)])
            return
        if not started:  # cancelled meanwhile
            self._jobs.update_batch(record.id, lease_owner=None, lease_until=None)

    def _fail(self, record: BatchRecord, errors: list[dict[str, Any]]) -> None:
        self._jobs.update_batch(
            record.id,
            statuses=("validating",),
            status="failed",
            failed_at=_now(),
            errors=json.dumps(errors),
            lease_owner=None,
            lease_until=None,
        )

    # -- lines --------------------------------------------------------------------------------

    async def _batch(self, batch_id: str) -> BatchRecord | None:
        """The batch of a claimed line (its fixed fields; read once per batch and tick)."""
        record = self._records.get(batch_id)
        if record is None:
            record = await self._db(self._jobs.get_batch, batch_id)
            if record is not None:
                self._records[batch_id] = record
        return record

    async def _run_line(self, line: ClaimedLine) -> None:
        record = await self._batch(line.batch_id)
        if record is None or record.status != "in_progress":
            return
        body = json.loads(line.body)
        operation = BATCH_ENDPOINTS.get(record.endpoint, "chat")
        rid = request_id()
        handler = self.handlers.get(operation)
        if handler is None:
            output = _line(line.custom_id, None, rid, error=_unsupported(record.endpoint))
            is_error = True
        else:
            status, answer = await self._attempt(handler, body, record, rid)
            output = _line(line.custom_id, (status, answer), rid)
            is_error = status != 200
        await self._db(
            self._jobs.finish_line, line.batch_id, line.line, json.dumps(output), is_error=is_error
        )

    async def _attempt(
        self, handler: LineHandler, body: dict[str, Any], record: BatchRecord, rid: str
    ) -> tuple[int, dict[str, Any]]:
        """Run a line until it has an answer; preempted or refused for a busy engine, it
        waits and runs again."""
        version = _version(record.api_version)
        while True:
            try:
                return 200, await handler(body, version, rid)
            except Preempted:
                continue
            except LineFailed as failed:
                return failed.status, failed.body
            except (ServiceUnavailable, ServerBusy):
                await asyncio.sleep(1.0)
            except APIError as exc:
                return exc.status_code, exc.body()
            except EngineError:
                logger.exception("batch line failed")
                return 500, InternalServerError(rid).body()

    async def _chat_line(
        self, body: dict[str, Any], version: ApiVersion, rid: str
    ) -> dict[str, Any]:
        request = parse_chat_request(json.dumps(body).encode(), version)
        deployment = await self._pool.resolve(str(body["model"]), "chat_completion")
        call = InferenceCall(
            deployment.record,
            deployment.generator,
            version,
            _BatchQuota(
                self._limiter,
                time.time,
                version.text,
                max_answer_tokens=self._settings.max_answer_tokens,
            ),
            rid,
            # Filtered as online chat is: a filtered prompt is the line's 400, a filtered
            # answer its finish_reason "content_filter" (the whole answer is judged at once).
            content_filter=(
                await self._content_safety.filter_for(deployment.record)
                if self._content_safety is not None
                else None
            ),
            priority="batch",
        )
        answer = await chat.create_chat_completion(call, request)
        return await answer.collect()

    # -- watching: leases, cancellation, finalization -----------------------------------------

    async def _watch(self, lease: float) -> bool:
        now = time.time()
        if self._inflight and now - self._renewed > lease / 3:
            self._renewed = now
            keys = list(self._inflight)
            await self._db(self._jobs.renew, self.owner, keys, now + lease)
            statuses = await self._db(self._jobs.running_statuses, sorted({b for b, _ in keys}))
            for key, task in list(self._inflight.items()):
                if statuses.get(key[0]) != "in_progress":
                    task.cancel()
        opened = await self._db(self._jobs.open_batches)
        running = {batch_id for batch_id, status, _ in opened if status == "in_progress"}
        for batch_id in list(self._records):  # a cached record is good while its batch runs
            if batch_id not in running:
                del self._records[batch_id]
        for batch_id, status, lease_until in opened:
            if lease_until is not None and lease_until >= now:
                continue
            if status == "in_progress":
                total, done, _ = await self._db(self._jobs.line_counts, batch_id)
                if done < total:
                    continue
                taken = await self._db(
                    self._jobs.take_batch,
                    batch_id,
                    "in_progress",
                    self.owner,
                    now,
                    lease,
                    {"status": "finalizing", "finalizing_at": _now()},
                )
                if taken:
                    await self._db(self._finalize, batch_id, "completed")
            elif status == "finalizing":  # a runner died while finalizing: do it again
                if await self._db(
                    self._jobs.take_batch, batch_id, "finalizing", self.owner, now, lease
                ):
                    await self._db(self._finalize, batch_id, "completed")
            else:  # cancelling
                for key, task in list(self._inflight.items()):
                    if key[0] == batch_id:
                        task.cancel()
                record = await self._db(self._jobs.get_batch, batch_id)
                held = await self._db(self._jobs.leased_pending, batch_id, now)
                since = record.cancelling_at if record and record.cancelling_at else 0
                if held and now - since < lease:
                    continue
                if await self._db(
                    self._jobs.take_batch, batch_id, "cancelling", self.owner, now, lease
                ):
                    await self._db(self._finalize, batch_id, "cancelled")
        return bool(opened)

    def _finalize(self, batch_id: str, final: str) -> None:
        """Write the output and error files from the checkpoints; the batch ends ``final``."""
        record = self._jobs.get_batch(batch_id)
        if record is None:
            return
        total, done, errors = self._jobs.line_counts(batch_id)
        expires = record.output_expires_after
        output = self._files.write_produced(
            f"{batch_id}_output.jsonl",
            "batch_output",
            (text for is_error, text in self._jobs.results(batch_id) if not is_error),
            expires_after=expires,
        )
        error_file = self._files.write_produced(
            f"{batch_id}_error.jsonl",
            "batch_output",
            (text for is_error, text in self._jobs.results(batch_id) if is_error),
            expires_after=expires,
        )
        values: dict[str, Any] = {
            "status": final,
            "output_file_id": output.id,
            "error_file_id": error_file.id,
            "total": total,
            "completed": done - errors,
            "failed": errors,
            "lease_owner": None,
            "lease_until": None,
            "completed_at" if final == "completed" else "cancelled_at": _now(),
        }
        self._jobs.update_batch(batch_id, **values)
        logger.info("batch %s %s: %d of %d lines, %d failed", batch_id, final, done, total, errors)


def _unsupported(endpoint: str) -> dict[str, Any]:
    return {
        "code": "unsupported_endpoint",
        "message": f"This server cannot run '{endpoint}' batch lines yet (docs/batch.md).",
    }


def _line(
    custom_id: str,
    answer: tuple[int, dict[str, Any]] | None,
    rid: str,
    *,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One output (or error) file line, in Azure's shape."""
    response = None
    if answer is not None:
        status, body = answer
        response = {"status_code": status, "request_id": rid, "body": body}
    return {
        "id": "batch_req_" + secrets.token_hex(16),
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def responses_handler(state: AppState) -> LineHandler:
    """The handler of ``/v1/responses`` lines: the Responses API's own path
    (:func:`cerulean.services.responses.run_response_request`), at batch priority and outside
    the online rate limits."""
    from cerulean.services.responses import run_response_request

    async def run(body: dict[str, Any], version: ApiVersion, rid: str) -> dict[str, Any]:
        quota = _BatchQuota(
            state.limiter,
            time.time,
            version.text,
            max_answer_tokens=state.settings.max_answer_tokens,
        )
        status, answer = await run_response_request(
            state, body, request_id=rid, quota=quota, version=version, priority="batch"
        )
        if status in (429, 503):  # a busy or loading engine: the runner waits and retries
            raise ServiceUnavailable()
        if status != 200:
            raise LineFailed(status, answer)
        return answer

    return run
