"""Turning a service's :class:`~cerulean.services.answers.Answer` into an HTTP response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cerulean.protocol.sse import SSE_MEDIA_TYPE
from cerulean.services.answers import Answer

__all__ = ["respond", "unless_disconnected"]


async def respond(request: Request, answer: Answer) -> Response:
    """The answer as an event stream, or as JSON once it is complete.

    A client that goes away before a JSON answer is complete cancels it (its engine slots are
    freed at once) and gets nothing (499, as nginx logs it).
    """
    if answer.stream:
        return StreamingResponse(answer.events(), media_type=SSE_MEDIA_TYPE, headers=answer.headers)
    result = await unless_disconnected(request, answer.collect())
    if result is None:
        await answer.aclose()
        return Response(status_code=499)
    return JSONResponse(result, headers=answer.headers)


async def unless_disconnected(
    request: Request, work: Awaitable[dict[str, Any]]
) -> dict[str, Any] | None:
    """Await ``work`` unless the client goes away first; then cancel it.

    The body has been read, so the next ASGI message can only be ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(request.receive())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None
