"""A fault-injecting TCP proxy for tests, run inside the test's own asyncio event loop.

Put it between a client and a server (``FaultProxy(host, port)``, ``await start()``, point the
client at ``proxy.endpoint_url``) and switch its mode at any time:

* ``await forward()`` - pass everything through (the default).
* ``await refuse()`` - close the listening socket, so new connections are refused
  (``ECONNREFUSED``); ``refuse(rst=True)`` keeps listening but resets each connection on accept.
  Either way every open connection is reset at once, as when a server dies.
* ``await reset_next_request(times=1)`` - read the next request whole, then reset the connection
  (``SO_LINGER`` 0, so the client gets ``ECONNRESET``) without forwarding it; the server never
  sees it.  ``times=None`` resets every request until the mode is changed.
* ``await reset_after(n)`` - forward ``n`` more requests, then reset on the next one.
  ``reset_after(n, unit="bytes")`` forwards ``n`` more request bytes and resets in the middle of
  the request that crosses the limit: the server gets a truncated request.
* ``await stall(seconds, times=None, then="forward")`` - read each request, answer nothing for
  ``seconds``, then forward it (or reset the connection, with ``then="reset"``).
* ``await answer(status, body, headers=(), times=None)`` - read each request and answer it
  ourselves with that response (a proxy's HTML error page, a bad ``x-amz-crc32``) instead of
  forwarding it; the server never sees it.
* ``await lose_next_response(times=1, action=None)`` - forward the request, let the server answer,
  then reset the client's connection instead of passing the answer on: the server applied the
  request but the client never hears of it.  ``action`` (e.g. ``"PutItem"``) limits it to
  requests of that DynamoDB action; others are forwarded.

One-shot modes (``times`` reached, ``reset_after`` fired) fall back to ``forward`` by themselves.
Decisions are made per HTTP request, so keep-alive connections opened earlier are affected too.
Requests are framed by parsing the client's byte stream (request line, headers, then
``Content-Length`` or chunked body), so counting is exact across keep-alive and pipelining; a
stream that is not HTTP/1.x is passed through raw and not counted.  ``Expect: 100-continue`` is
not supported (the proxy waits for the whole body before deciding).

Counters: ``connections`` (accepted), ``requests`` (complete requests seen), ``forwarded``,
``resets``, ``stalls``, ``upstream_failures``; ``log`` holds a `RequestInfo` per request seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

Mode = Literal["forward", "refuse", "reset", "stall", "answer", "lose"]

MAX_HEAD = 64 * 1024
_READ = 64 * 1024


@dataclass(frozen=True)
class RequestInfo:
    """One HTTP request seen by the proxy."""

    method: str
    target: str
    operation: str | None  # the X-Amz-Target header, e.g. "DynamoDB_20120810.GetItem"
    size: int  # bytes on the wire, head and body
    body: bytes = field(default=b"", repr=False)  # as sent (still chunk-framed if chunked)

    @property
    def action(self) -> str | None:
        """The DynamoDB action name ("GetItem") from ``operation``."""
        return None if self.operation is None else self.operation.rpartition(".")[2]


def parse_request(buf: bytes | bytearray) -> tuple[RequestInfo, int] | None:
    """Frame the first HTTP/1.x request in ``buf``.

    Returns ``(info, end)`` where ``buf[:end]`` is the whole request, or None while incomplete.
    Raises ValueError if ``buf`` does not start with an HTTP/1.x request.
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("request head too long")
        line_end = buf.find(b"\r\n")
        if line_end >= 0:
            _request_line(bytes(buf[:line_end]))
        return None
    lines = bytes(buf[:head_end]).split(b"\r\n")
    method, target = _request_line(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise ValueError(f"bad header line {line!r}")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    pos = head_end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        end = _chunked_end(buf, pos)
        if end is None:
            return None
    else:
        length = int(headers.get("content-length", "0"))
        if length < 0:
            raise ValueError("negative Content-Length")
        end = pos + length
        if len(buf) < end:
            return None
    body = bytes(buf[pos:end])
    return RequestInfo(method, target, headers.get("x-amz-target"), end, body), end


def _request_line(line: bytes) -> tuple[str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x request line: {line[:80]!r}")
    return parts[0].decode("ascii"), parts[1].decode("latin-1")


def _chunked_end(buf: bytes | bytearray, pos: int) -> int | None:
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0].strip(), 16)
        pos = line_end + 2
        if size == 0:  # last chunk: optional trailers, then an empty line
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                if line_end == pos:
                    return pos + 2
                pos = line_end + 2
        if len(buf) < pos + size + 2:
            return None
        pos += size + 2


def _abort(writer: asyncio.StreamWriter, *, rst: bool = True) -> None:
    """Close a connection at once; with ``rst`` the peer gets a TCP RST (SO_LINGER 0)."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.client_r = reader
        self.client_w = writer
        self.up_r: asyncio.StreamReader | None = None
        self.up_w: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.lose = False  # drop the server's next answer and reset the client instead

    def abort(self) -> None:
        _abort(self.client_w)
        if self.up_w is not None:
            _abort(self.up_w)


class FaultProxy:
    """See the module docstring.  All mode switches are coroutines: ``await proxy.refuse()``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._mode: Mode = "forward"
        self._refuse_rst = False
        self._times: int | None = None  # requests still affected by reset/stall; None = all
        self._skip = 0  # requests to forward before a reset fires
        self._byte_budget: int | None = None  # request bytes to forward before a reset fires
        self._stall_seconds = 0.0
        self._stall_then: Literal["forward", "reset"] = "forward"
        self._answer = b""
        self._only: str | None = None  # lose: the DynamoDB action affected (None: any)
        self.reset_counters()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Start listening (on a free port the first time); returns the port."""
        await self._listen()
        assert self.port is not None
        return self.port

    async def stop(self) -> None:
        """Stop listening and reset every open connection."""
        await self._unlisten()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FaultProxy not started")
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def reset_counters(self) -> None:
        self.connections = 0
        self.requests = 0
        self.forwarded = 0
        self.resets = 0
        self.stalls = 0
        self.lost = 0
        self.upstream_failures = 0
        self.log: list[RequestInfo] = []

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests have been seen."""
        deadline = time.monotonic() + timeout
        while self.requests < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {self.requests} requests, wanted {n}")
            await asyncio.sleep(0.01)

    # -- modes -------------------------------------------------------------------------------

    async def forward(self) -> None:
        self._set_mode("forward")
        await self._listen()

    async def refuse(self, *, rst: bool = False) -> None:
        self._set_mode("refuse")
        self._refuse_rst = rst
        if rst:
            await self._listen()
            await self._abort_all()
        else:
            await self._unlisten()

    async def reset_next_request(self, times: int | None = 1) -> None:
        self._set_mode("reset", times)
        await self._listen()

    async def reset_after(self, n: int, *, unit: Literal["requests", "bytes"] = "requests") -> None:
        self._set_mode("reset", 1)
        if unit == "bytes":
            self._byte_budget = n
        else:
            self._skip = n
        await self._listen()

    async def stall(
        self,
        seconds: float,
        *,
        times: int | None = None,
        then: Literal["forward", "reset"] = "forward",
    ) -> None:
        self._set_mode("stall", times)
        self._stall_seconds = seconds
        self._stall_then = then
        await self._listen()

    async def answer(
        self,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
        *,
        times: int | None = None,
    ) -> None:
        self._set_mode("answer", times)
        head = f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._answer = head.encode("latin-1") + b"\r\n" + body
        await self._listen()

    async def lose_next_response(self, times: int | None = 1, *, action: str | None = None) -> None:
        self._set_mode("lose", times)
        self._only = action
        await self._listen()

    def _set_mode(self, mode: Mode, times: int | None = None) -> None:
        self._mode = mode
        self._times = times
        self._skip = 0
        self._byte_budget = None
        self._refuse_rst = False

    def _used_once(self) -> None:
        if self._times is not None:
            self._times -= 1
            if self._times <= 0:
                self._set_mode("forward")

    def _decide(self, size: int, info: RequestInfo | None = None) -> tuple[str, int]:
        """What to do with a complete request of ``size`` bytes: (action, bytes to forward)."""
        if self._mode == "lose":
            if self._only is not None and (info is None or info.action != self._only):
                return "forward", size
            self._used_once()
            return "lose", size
        if self._mode == "refuse":
            return "reset", 0
        if self._mode == "reset":
            if self._byte_budget is not None:
                if self._byte_budget >= size:
                    self._byte_budget -= size
                    return "forward", size
                cut = self._byte_budget
                self._set_mode("forward")
                return "reset", cut
            if self._skip > 0:
                self._skip -= 1
                return "forward", size
            self._used_once()
            return "reset", 0
        if self._mode in ("stall", "answer"):
            mode = self._mode
            self._used_once()
            return mode, size
        return "forward", size

    # -- listener ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port or 0, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._abort_all()
        if server is not None:
            await server.wait_closed()

    async def _abort_all(self) -> None:
        conns = list(self._conns)
        self._conns.clear()
        tasks: list[asyncio.Task[Any]] = []
        for conn in conns:
            conn.abort()
            if conn.task is not None and conn.task is not asyncio.current_task():
                conn.task.cancel()
                tasks.append(conn.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- connections -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # stop()/refuse() cancel connection tasks: end quietly, since asyncio.streams (3.11)
        # logs "Exception in callback" for a cancelled client_connected_cb task.
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._mode == "refuse":  # refuse(rst=True): accept, then reset at once
            _abort(writer)
            return
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        try:
            try:
                conn.up_r, conn.up_w = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                self.upstream_failures += 1
                _abort(writer)
                return
            c2s = asyncio.create_task(self._client_to_server(conn))
            s2c = asyncio.create_task(self._server_to_client(conn))
            try:
                await asyncio.gather(c2s, s2c)
            finally:
                for task in (c2s, s2c):
                    task.cancel()
                await asyncio.gather(c2s, s2c, return_exceptions=True)
        finally:
            self._conns.discard(conn)
            for w in (writer, conn.up_w):
                if w is not None and not w.is_closing():
                    w.close()
            for w in (writer, conn.up_w):
                if w is not None:
                    with contextlib.suppress(Exception):
                        await w.wait_closed()

    async def _client_to_server(self, conn: _Conn) -> None:
        assert conn.up_w is not None
        up = conn.up_w
        buf = bytearray()
        passthrough = False
        try:
            while True:
                data = await conn.client_r.read(_READ)
                if not data:  # client finished sending: pass the half-close on
                    if buf:
                        up.write(bytes(buf))
                    if up.can_write_eof():
                        up.write_eof()
                    return
                if passthrough:
                    up.write(data)
                    await up.drain()
                    continue
                buf += data
                while buf:
                    try:
                        parsed = parse_request(buf)
                    except ValueError:
                        passthrough = True
                        up.write(bytes(buf))
                        buf.clear()
                        break
                    if parsed is None:
                        break
                    info, end = parsed
                    raw = bytes(buf[:end])
                    del buf[:end]
                    self.requests += 1
                    self.log.append(info)
                    action, n = self._decide(len(raw), info)
                    if action == "stall":
                        self.stalls += 1
                        await asyncio.sleep(self._stall_seconds)
                        if self._stall_then == "reset":
                            action, n = "reset", 0
                    if action == "answer":
                        conn.client_w.write(self._answer)
                        await conn.client_w.drain()
                        continue
                    if action == "reset":
                        if n:
                            up.write(raw[:n])
                            await up.drain()
                        self.resets += 1
                        conn.abort()
                        return
                    if action == "lose":
                        conn.lose = True
                    up.write(raw)
                    await up.drain()
                    self.forwarded += 1
        except (OSError, RuntimeError):
            conn.abort()

    async def _server_to_client(self, conn: _Conn) -> None:
        assert conn.up_r is not None
        try:
            while True:
                data = await conn.up_r.read(_READ)
                if not data:
                    break
                if conn.lose:  # the server has answered: the client never hears it
                    self.lost += 1
                    conn.abort()
                    return
                conn.client_w.write(data)
                await conn.client_w.drain()
        except (OSError, RuntimeError):
            conn.abort()
            return
        # The server closed its side: close ours to the client too.
        conn.client_w.close()


class HttpFaultProxy:
    """A loopback HTTP proxy that answers DynamoDB errors `failures` times, then forwards.

    Modes: "throttle" (400 ThrottlingException), "500", "stall" (no answer until stopped).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "forward"
        self.failures = 0
        self.requests = 0
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.endpoint_url = ""

    def fail(self, mode: str, times: int) -> None:
        self.mode, self.failures, self.requests = mode, times, 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._client = aiohttp.ClientSession()

    async def stop(self) -> None:
        self.release.set()
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if self.failures > 0:
            self.failures -= 1
            if self.mode == "throttle":
                return web.Response(
                    status=400,
                    content_type="application/x-amz-json-1.0",
                    text='{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
                    '"message":"Rate of requests exceeds the allowed throughput."}',
                )
            if self.mode == "500":
                return web.Response(status=500, text="internal error")
            if self.mode == "stall":
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.release.wait(), 10)
                return web.Response(status=500)
            raise AssertionError(self.mode)
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._client.post(self.upstream, data=body, headers=headers) as upstream:
            data = await upstream.read()
            forwarded = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() in ("content-type", "x-amz-crc32", "x-amzn-requestid")
            }
            return web.Response(status=upstream.status, body=data, headers=forwarded)


class ForwardProxy:
    """A loopback HTTP forward proxy that counts what goes through it.

    A request in absolute form (``POST http://host:port/ HTTP/1.1``, what clients send to an
    ``HTTP_PROXY``) opens a connection to that host and the client's bytes are piped there as
    they are (HTTP/1.1 servers accept the absolute form); ``CONNECT host:port`` opens a tunnel
    (for https endpoints). ``requests`` counts requests seen in absolute form, ``tunnels``
    CONNECTs, ``targets`` the ``host:port`` of each connection.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.tunnels = 0
        self.targets: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_w: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                self.tunnels += 1
                first = b""
            else:
                url = urlsplit(target)
                host, port = url.hostname or "", str(url.port or 80)
                first = head
            self.targets.append(f"{host}:{port}")
            up_r, up_w = await asyncio.open_connection(host, int(port))
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_w.write(first)
            await asyncio.gather(
                self._pipe(reader, up_w, count=method != "CONNECT", seen=first),
                self._pipe(up_r, writer),
            )
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        count: bool = False,
        seen: bytes = b"",
    ) -> None:
        buf = bytearray(seen)
        try:
            while True:
                if count:
                    while (parsed := parse_request(buf)) is not None:
                        self.requests += 1
                        del buf[: parsed[1]]
                data = await reader.read(_READ)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                if count:
                    buf += data
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()
