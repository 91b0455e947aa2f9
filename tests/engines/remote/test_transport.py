"""The upstream transport against a raw asyncio HTTP server: bodies as they come, kept-alive
connections, and every failure as the httpx exception httpx's own transport raises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from cerulean.engines.remote.transport import UpstreamTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def client(**timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=UpstreamTransport(keepalive_expiry=5.0), timeout=httpx.Timeout(5.0, **timeouts)
    )


async def _pieces(response: httpx.Response) -> AsyncIterator[bytes]:
    async for piece in response.aiter_raw():
        yield piece


def test_a_chunked_stream_comes_piece_by_piece_and_the_connection_is_kept() -> None:
    gate = asyncio.Event

    async def main() -> None:
        sent: list[asyncio.Event] = [gate(), gate()]

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                request = await _request(reader)
                server.requests.append(request)
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-up: 1\r\n\r\n")
                writer.write(_chunk(b"data: one\n\n"))
                await writer.drain()
                await sent[0].wait()
                writer.write(_chunk(b"data: two\n\n") + b"0\r\n\r\n")
                await writer.drain()
                sent.pop(0)
                sent.append(gate())

        server = Server(handler)
        async with server as url, client() as http:
            for _ in range(2):
                request = http.build_request("POST", url + "/v1/x?q=1", json={"a": 1})
                response = await http.send(request, stream=True)
                assert response.status_code == 200 and response.headers["x-up"] == "1"
                pieces = _pieces(response)
                assert await anext(pieces) == b"data: one\n\n"  # before the rest was sent
                sent[0].set()
                assert [p async for p in pieces] == [b"data: two\n\n"]
                await response.aclose()
            assert server.connections == 1  # the second request reused the connection
            first = server.requests[0]
            assert first.startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
            assert b"\r\nhost: 127.0.0.1:" in first.lower() and first.endswith(b'{"a":1}')

    asyncio.run(main())


def test_a_json_body_with_a_length_reads_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        body = b'{"object": "list", "data": []}'
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with Server(handler) as url, client() as http:
            response = await http.get(url + "/v1/models")
            assert response.status_code == 404 and response.json() == {
                "object": "list",
                "data": [],
            }

    asyncio.run(main())


def test_what_came_before_a_cut_is_read_before_the_error() -> None:
    """An upstream that dies mid-answer: its last tokens still reach the reader, then h11's
    RemoteProtocolError (aiohttp's client drops them; the reason this transport exists)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(_chunk(b"data: a\n\n") + _chunk(b"data: b\n\n"))
        await writer.drain()
        writer.transport.abort()

    async def main() -> None:
        async with Server(handler) as url, client() as http:
            response = await http.send(http.build_request("POST", url, json={}), stream=True)
            await asyncio.sleep(0.2)  # the bytes and the close have both arrived
            got = b""
            with pytest.raises(httpx.RemoteProtocolError):
                async for piece in response.aiter_raw():
                    got += piece
            assert got == b"data: a\n\ndata: b\n\n"
            await response.aclose()

    asyncio.run(main())


def test_a_stall_is_a_read_timeout_and_a_refusal_a_connect_error() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + _chunk(b"x"))
        await writer.drain()
        await asyncio.sleep(5)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with Server(stall) as url, client(read=0.3) as http:
            response = await http.send(http.build_request("POST", url, json={}), stream=True)
            with pytest.raises(httpx.ReadTimeout):
                async for _ in response.aiter_raw():
                    pass
            await response.aclose()
        async with Server(silent) as url, client(read=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(url, json={})
        async with Server(silent) as url:
            pass  # closed: nothing listens on its port now
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.post(url, json={})

    asyncio.run(main())


def test_a_closed_kept_alive_connection_is_not_reused_and_an_abandoned_body_closes() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # then the server closes the idle connection (its keep-alive timeout)

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(_chunk(b"data: x\n\n"))
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main() -> None:
        server = Server(once)
        async with server as url, client() as http:
            assert (await http.get(url)).text == "ok"
            await asyncio.sleep(0.1)
            assert (await http.get(url)).text == "ok"
            assert server.connections == 2
        server = Server(endless)
        async with server as url, client() as http:
            async with http.stream("POST", url, json={}) as response:
                async for _ in response.aiter_raw():
                    break
            async with http.stream("POST", url, json={}) as response:
                async for _ in response.aiter_raw():
                    break
            assert server.connections == 2  # the abandoned stream's connection was closed

    asyncio.run(main())


def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> None:
        async with Server(garbage) as url, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post(url, json={})

    asyncio.run(main())


def test_a_kept_alive_connection_closed_as_the_request_went_out_is_retried_once() -> None:
    served: list[int] = []

    async def racing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = not served
        served.append(1)
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        if first:  # its keep-alive timeout strikes as the next request arrives: no answer
            await _request(reader)
            return
        await _request(reader)  # a later connection answers the next one, then cuts a body
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\npar")
        await writer.drain()

    async def main() -> None:
        server = Server(racing)
        async with server as url, client() as http:
            assert (await http.post(url, json={})).text == "ok"
            assert (await http.post(url, json={})).text == "ok"  # sent again, on a new one
            assert server.connections == 2
            with pytest.raises(httpx.RemoteProtocolError):  # begun, then cut: not sent again
                await http.post(url, json={})
            assert server.connections == 2

    asyncio.run(main())
