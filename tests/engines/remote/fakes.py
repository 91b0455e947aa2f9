"""Flavor-faithful fake upstreams on loopback, with fault injection.

Each :class:`FakeUpstream` is a real HTTP server (uvicorn in a thread, on a free port) that
answers as the flavor's OpenAI server does — vLLM and SGLang (a usage-only final chunk when
``stream_options.include_usage`` is set), Ollama (no ``n``), Azure (the prompt-filter chunk,
``content_filter_results`` on chunks, a 429 with ``retry-after-ms``) — and can be told to fail:
stall before the first byte, cut the stream after N tokens, send a malformed line, answer 500
or 429, stall mid-answer. It records every body it received.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

SAFE = {"filtered": False, "severity": "safe"}
AZURE_FILTERS = {"hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Faults:
    """What the next requests meet (all off by default)."""

    status: int | None = None  # answer this status before any chunk (500, 429...)
    retry_after_ms: int | None = None  # with a 429
    stall_first_byte: float = 0.0  # seconds before the response starts
    cut_after: int | None = None  # tokens, then the connection is dropped
    malformed_after: int | None = None  # tokens, then a line that is not JSON
    stall_after: int | None = None  # tokens, then silence for stall_seconds
    stall_seconds: float = 30.0
    times: int | None = None  # how many requests fail this way (None: all)

    def applies(self) -> bool:
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class FakeUpstream:
    """A fake server of ``flavor`` answering with ``words`` (one token each)."""

    flavor: str = "vllm"
    words: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " upstream", "."])
    delay: float = 0.0  # seconds between tokens
    faults: Faults = field(default_factory=Faults)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def azure(self) -> bool:
        return self.flavor in ("azure", "cerulean")

    @property
    def url(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return base + "/" if self.azure else base + "/v1"

    def app(self) -> FastAPI:
        app = FastAPI()
        prefix = "/openai/deployments/{deployment}" if self.azure else "/v1"

        @app.post(prefix + "/chat/completions")
        async def chat(request: Request) -> Response:
            return await self._answer(request, chat=True)

        @app.post(prefix + "/completions")
        async def completions(request: Request) -> Response:
            return await self._answer(request, chat=False)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "fake-model", "max_model_len": 2048}]}

        @app.get("/openai/deployments/{deployment}")
        async def deployment(deployment: str) -> dict[str, Any]:
            return {"id": deployment, "model": "gpt-4o", "object": "deployment"}

        @app.get("/openai/models")
        async def azure_models() -> dict[str, Any]:
            return {"object": "list", "data": []}

        @app.get("/health")
        @app.get("/healthz")
        @app.get("/")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        return app

    async def _answer(self, request: Request, *, chat: bool) -> Response:
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        faults = self.faults
        failing = (
            faults.applies()
            if any(
                (
                    faults.status,
                    faults.stall_first_byte,
                    faults.cut_after is not None,
                    faults.malformed_after is not None,
                    faults.stall_after is not None,
                )
            )
            else False
        )
        if failing and faults.stall_first_byte:
            await asyncio.sleep(faults.stall_first_byte)
        if failing and faults.status is not None:
            return self._error(faults)
        if self.flavor == "ollama" and (body.get("n") or 1) > 1:
            return JSONResponse({"error": {"message": "n is not supported"}}, status_code=400)
        events = self._events(body, chat=chat, faults=faults if failing else Faults())
        return StreamingResponse(events, media_type="text/event-stream")

    def _error(self, faults: Faults) -> Response:
        status = faults.status or 500
        headers = {}
        if status == 429 and faults.retry_after_ms is not None:
            headers = {"retry-after-ms": str(faults.retry_after_ms), "retry-after": "1"}
        body: dict[str, Any]
        if self.azure and status == 429:
            body = {"error": {"code": "429", "message": "Requests ... exceeded token rate limit."}}
        else:
            body = {"error": {"message": f"fake failure {status}", "type": "server_error"}}
        return JSONResponse(body, status_code=status, headers=headers)

    def _chunk(self, body: dict[str, Any], choice: dict[str, Any], chat: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-fake" if chat else "cmpl-fake",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "gpt-4o"),
            "choices": [choice],
        }
        if self.azure:
            choice.setdefault(
                "content_filter_results",
                AZURE_FILTERS if choice.get("delta", {}).get("content") else {},
            )
        return out

    async def _events(
        self, body: dict[str, Any], *, chat: bool, faults: Faults
    ) -> AsyncIterator[bytes]:
        def sse(payload: Any) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        n = int(body.get("n") or 1)
        if self.azure:
            yield sse(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": AZURE_FILTERS}
                    ],
                }
            )
        calls = chat and body.get("tools") and body.get("tool_choice") != "none"
        pieces = ['{"ci', 'ty": "Par', 'is"}'] if calls else self.words
        cap = body.get("max_tokens")
        for index in range(n):
            if chat:
                role = {"role": "assistant", "content": None if calls else ""}
                yield sse(
                    self._chunk(body, {"index": index, "delta": role, "finish_reason": None}, chat)
                )
            for k, piece in enumerate(pieces):
                if cap is not None and k >= cap:
                    break
                if faults.cut_after is not None and k >= faults.cut_after:
                    raise RuntimeError("cut")  # uvicorn drops the connection mid-body
                if faults.malformed_after is not None and k >= faults.malformed_after:
                    yield b"data: {oops\n\n"
                    return
                if faults.stall_after is not None and k >= faults.stall_after:
                    await asyncio.sleep(faults.stall_seconds)
                await asyncio.sleep(self.delay)
                if calls and chat:
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                    if k == 0:
                        call.update(
                            {
                                "id": "call_upstream1",
                                "type": "function",
                                "function": {
                                    "name": body["tools"][0]["function"]["name"],
                                    "arguments": piece,
                                },
                            }
                        )
                    delta: dict[str, Any] = {"tool_calls": [call]}
                    yield sse(
                        self._chunk(
                            body, {"index": index, "delta": delta, "finish_reason": None}, chat
                        )
                    )
                elif chat:
                    yield sse(
                        self._chunk(
                            body,
                            {"index": index, "delta": {"content": piece}, "finish_reason": None},
                            chat,
                        )
                    )
                else:
                    yield sse(
                        self._chunk(
                            body,
                            {
                                "index": index,
                                "text": piece,
                                "finish_reason": None,
                                "logprobs": None,
                            },
                            chat,
                        )
                    )
            cut = cap is not None and cap < len(pieces)
            reason = "length" if cut else ("tool_calls" if calls else "stop")
            final: dict[str, Any] = {"index": index, "finish_reason": reason}
            final["delta" if chat else "text"] = {} if chat else ""
            yield sse(self._chunk(body, final, chat))
        if (body.get("stream_options") or {}).get("include_usage"):
            produced = min(len(pieces), cap or len(pieces)) * n
            usage = {
                "prompt_tokens": 11,
                "completion_tokens": produced,
                "total_tokens": 11 + produced,
            }
            yield sse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body.get("model", "gpt-4o"),
                    "choices": [],
                    "usage": usage,
                }
            )
        yield b"data: [DONE]\n\n"

    def start(self) -> FakeUpstream:
        self.port = self.port or free_port()
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None


@contextmanager
def running(*fakes: FakeUpstream) -> Iterator[tuple[FakeUpstream, ...]]:
    for fake in fakes:
        fake.start()
    try:
        yield fakes
    finally:
        for fake in fakes:
            fake.stop()
