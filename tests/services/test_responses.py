"""The Responses API's pieces: input items, the event shaper, truncation, the store's upkeep and
the entry point other services call (docs/responses.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cerulean.engines.base import ChatMessage, EngineChunk, ToolCallDelta
from cerulean.errors import InvalidRequest
from cerulean.protocol.apiversions import parse_api_version
from cerulean.protocol.responses import check_responses_version, parse_response_request
from cerulean.services.response_events import Shaper, usage_body
from cerulean.services.response_items import chat_messages, read_format, read_input
from cerulean.services.responses import (
    BackgroundRuns,
    ResponsesContext,
    _drop_oldest,
    get_response,
    prepare_store,
)
from cerulean.store.base import ResponseRecord
from cerulean.store.sql import SqlStore

NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)


def test_only_new_api_versions_serve_responses() -> None:
    for text in ("2025-03-01-preview", "2025-04-01-preview"):
        version = parse_api_version(text)
        assert version is not None
        check_responses_version(version)
    old = parse_api_version("2025-02-01-preview")
    assert old is not None
    with pytest.raises(InvalidRequest, match="2025-03-01-preview and later"):
        check_responses_version(old)


def test_unknown_and_unsupported_arguments() -> None:
    with pytest.raises(InvalidRequest, match="Unrecognized request argument supplied: nope"):
        parse_response_request(b'{"model": "m", "input": "x", "nope": 1}')
    with pytest.raises(InvalidRequest, match="'include' is not supported"):
        parse_response_request(b'{"model": "m", "input": "x", "include": ["a"]}')
    with pytest.raises(InvalidRequest, match="at most 16 properties"):
        parse_response_request(
            json.dumps({"input": "x", "metadata": {str(i): "v" for i in range(17)}}).encode()
        )
    assert parse_response_request(b'{"input": "x", "reasoning": {}}').input == "x"


def test_input_items_become_the_chat_conversation() -> None:
    items = read_input(
        [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"text": "rain"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        ]
    )
    assert all(item["id"] for item in items)
    assert items[4]["content"][0] == {
        "type": "output_text",
        "text": "ok",
        "annotations": [],
        "logprobs": [],
    }
    messages = chat_messages("be nice", items)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert [c.id for c in messages[2].tool_calls] == ["c1", "c2"]  # one message, two calls
    assert messages[3] == ChatMessage("tool", "rain", name="g", tool_call_id="c2")
    with pytest.raises(InvalidRequest, match="input\\[0\\].call_id"):
        read_input([{"type": "function_call_output", "output": "x"}])
    with pytest.raises(InvalidRequest) as refused:
        read_input([{"role": "robot", "content": "x"}])
    assert refused.value.param == "input[0].role"


def test_text_format() -> None:
    assert read_format(None) == (None, {"type": "text"})
    fmt, echo = read_format({"format": {"type": "json_schema", "name": "n", "schema": {}}})
    assert fmt is not None and fmt.kind == "json_schema" and fmt.name == "n"
    assert echo == {"type": "json_schema", "name": "n", "schema": {}}
    with pytest.raises(InvalidRequest, match="Supported values"):
        read_format({"format": {"type": "yaml"}})


def test_shaper_numbers_events_and_closes_items_in_order() -> None:
    shaper = Shaper({"id": "resp_1", "status": "in_progress", "output": []})
    events = shaper.opening()
    events += shaper.chunk(EngineChunk(text="Hi"))
    events += shaper.chunk(EngineChunk(tool_calls=(ToolCallDelta(0, id="c", name="f"),)))
    events += shaper.chunk(EngineChunk(tool_calls=(ToolCallDelta(0, arguments="{}"),)))
    events += shaper.finish("tool_calls", usage_body(5, 3), NOW.timestamp())
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",  # the message closes when the call starts
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 8
    assert [item["status"] for item in final["output"]] == ["completed", "completed"]
    assert final["output"][1]["arguments"] == "{}"


def test_shaper_failure_and_length() -> None:
    shaper = Shaper({"id": "resp_1", "status": "in_progress", "output": []})
    shaper.chunk(EngineChunk(text="cut"))
    failed = shaper.fail("server_error", "boom")
    assert [e["type"] for e in failed] == ["error", "response.failed"]
    assert failed[1]["response"]["error"] == {"code": "server_error", "message": "boom"}
    long = Shaper({"id": "resp_2", "status": "in_progress", "output": []})
    long.chunk(EngineChunk(text="a"))
    end = long.finish("length", usage_body(1, 1), 0)[-1]
    assert end["type"] == "response.incomplete"
    assert end["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_truncation_keeps_system_and_the_last_message() -> None:
    messages = [
        ChatMessage("system", "s"),
        ChatMessage("assistant", None),
        ChatMessage("tool", "orphan", tool_call_id="c"),
        ChatMessage("user", "last"),
    ]
    assert _drop_oldest(messages)
    assert [m.role for m in messages] == ["system", "user"]  # the orphan result went too
    assert not _drop_oldest(messages)


def _record(response_id: str, status: str, beat: datetime) -> ResponseRecord:
    body = {"id": response_id, "status": status, "background": True, "output": []}
    return ResponseRecord(
        response_id, "gpt-4", status, NOW, NOW + timedelta(days=1), json.dumps(body), "[]", "[]",
        runner="a server", heartbeat=beat,
    )  # fmt: skip


def test_startup_fails_interrupted_runs_and_purges(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ctx = ResponsesContext(
        store, BackgroundRuns(), timedelta(days=30), "me", lambda: NOW.timestamp(), heartbeat=10
    )
    store.put_response(_record("resp_mine", "in_progress", NOW - timedelta(seconds=31)))
    store.put_response(_record("resp_other", "queued", NOW - timedelta(seconds=20)))
    expired = _record("resp_old", "completed", NOW)
    store.put_response(
        ResponseRecord(**{**expired.__dict__, "expires_at": NOW - timedelta(seconds=1)})
    )
    asyncio.run(prepare_store(ctx))
    mine = store.get_response("resp_mine", NOW)
    assert mine is not None and mine.status == "failed"
    assert json.loads(mine.body)["error"]["code"] == "server_error"
    other = store.get_response("resp_other", NOW)
    assert other is not None and other.status == "queued"  # its server still beats
    later = dataclasses.replace(ctx, clock=lambda: NOW.timestamp() + 15)
    assert asyncio.run(get_response(later, "resp_other"))["status"] == "failed"  # it stopped
    assert store.purge_responses(NOW + timedelta(days=2)) == 2  # resp_old was purged already
    store.close()


def test_a_run_cancelled_before_it_starts_is_still_ended(tmp_path: Path) -> None:
    from unittest.mock import AsyncMock, MagicMock

    from cerulean.services.responses import _cancel_run, _Run

    async def scenario() -> None:
        store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
        runs = BackgroundRuns()
        ctx = ResponsesContext(store, runs, timedelta(days=1), "me", clock=lambda: 0.0)
        turn = MagicMock()
        turn.ctx = ctx
        turn.response = {"id": "resp_x"}
        turn.close = AsyncMock()
        turn.save = AsyncMock()
        run = _Run(turn)
        runs.runs["resp_x"] = run
        run.task = asyncio.create_task(asyncio.sleep(10))  # never gets to run its ending
        await runs.aclose()
        assert run.finished and runs.runs == {}
        turn.shaper.cancelled.assert_called_once()
        turn.close.assert_awaited_once()
        turn.save.assert_awaited_once()
        await _cancel_run(run)  # idempotent
        turn.close.assert_awaited_once()
        store.close()

    asyncio.run(scenario())


def test_tool_choice_without_tools() -> None:
    from cerulean.services.response_items import read_response_tools

    assert read_response_tools(None, "auto", None) is None
    assert read_response_tools([], "none", None) is None
    with pytest.raises(InvalidRequest, match="only allowed when 'tools'"):
        read_response_tools(None, "required", None)
    named = read_response_tools(
        [{"type": "function", "name": "f"}], {"type": "function", "name": "f"}, None
    )
    assert named is not None and named.choice == "function" and named.function == "f"


def test_a_cancel_on_another_replica_stops_the_run_here(tmp_path: Path) -> None:
    from unittest.mock import AsyncMock, MagicMock

    from cerulean.services.responses import _cancelled_elsewhere, _Run

    async def scenario() -> None:
        store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
        ctx = ResponsesContext(store, BackgroundRuns(), timedelta(days=1), "me", lambda: 0.0)
        running = dataclasses.replace(_record("resp_x", "in_progress", NOW), created_at=NOW)
        store.put_response(running)
        turn = MagicMock(ctx=ctx, response={"id": "resp_x"}, close=AsyncMock(), save=AsyncMock())
        run = _Run(turn)
        ctx.runs.runs["resp_x"] = run
        run.task = asyncio.create_task(asyncio.sleep(10))
        await _cancelled_elsewhere(dataclasses.replace(ctx, clock=NOW.timestamp))
        assert not run.finished  # still in progress in the store: left running
        store.put_response(dataclasses.replace(running, status="cancelled"))
        await _cancelled_elsewhere(dataclasses.replace(ctx, clock=NOW.timestamp))
        assert run.finished and run.task.cancelled() and ctx.runs.runs == {}
        store.close()

    asyncio.run(scenario())
