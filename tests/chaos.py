"""Chaos harness: a loopback HTTP proxy that injects a seeded random mix of network faults in
front of a DynamoDB-compatible server, and a raw in-process ASGI caller.

`ChaosProxy(host, port, seed=..., rate=...)` listens on 127.0.0.1; point a store's
``endpoint_url`` at ``proxy.endpoint_url``. For each HTTP request it takes the next scripted
fault for that DynamoDB action from ``proxy.plan`` if there is one, else draws a fault from the
weights in `FAULTS` (or forwards untouched), and records what it did in ``proxy.log``:

* ``reset_before``  - the request is read whole, never forwarded, and the connection reset.
* ``stall_before``  - the request is held for ``stall`` seconds (past the client's read timeout),
  never forwarded, then the connection reset.
* ``lost``          - forwarded (DynamoDB applies it), the answer read and dropped, then reset.
* ``truncate``      - forwarded; half of the answer is sent, then the connection reset.
* ``stall_after``   - forwarded; the answer is held for ``stall`` seconds, then reset.
* ``error_5xx``     - not forwarded: a 500 InternalServerError JSON answer.
* ``error_after``   - forwarded (applied), then answered 500 InternalServerError instead.
* ``throttle``      - not forwarded: HTTP 400 ``ThrottlingException`` JSON.
* ``bad_crc``       - forwarded (applied); the answer's ``x-amz-crc32`` is replaced by a wrong
  (numeric) checksum.

``applied`` faults (lost, truncate, stall_after, error_after, bad_crc) reach the server; the
others never do. Requests are framed with `netfault.parse_request`; answers by status line,
headers and Content-Length or chunked body (or until the server closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from netfault import RequestInfo, _abort, parse_request

#: Fault name -> default weight relative to FORWARD_WEIGHT (an untouched request).
FAULTS: dict[str, float] = {
    "reset_before": 1.0,
    "stall_before": 0.3,
    "lost": 1.5,
    "truncate": 0.7,
    "stall_after": 0.3,
    "error_5xx": 0.7,
    "error_after": 0.5,
    "throttle": 1.0,
    "bad_crc": 0.7,
}
#: Faults whose request reaches the server (its write is applied although the client fails).
APPLIED = frozenset({"lost", "truncate", "stall_after", "error_after", "bad_crc"})

_JSON = b"application/x-amz-json-1.0"
_THROTTLE = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
    b'"message":"Rate of requests exceeds the allowed throughput."}'
)
_INTERNAL = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
    b'"message":"Internal server error"}'
)


@dataclass(frozen=True)
class Fault:
    """One request the proxy saw and what it did to it."""

    action: str | None  # the DynamoDB action ("PutItem"), None for a non-DynamoDB request
    fault: str  # "forward" or a key of FAULTS
    key: str | None  # the partition key value the request names (Key or Item), if any
    at: float  # time.monotonic() when the request was complete


def _partition_key(body: bytes) -> str | None:
    """The first string attribute of the request's Key or Item (the partition key)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    for field in ("Key", "Item"):
        attrs = document.get(field)
        if isinstance(attrs, dict):
            for value in attrs.values():
                if isinstance(value, dict) and isinstance(value.get("S"), str):
                    return str(value["S"])
    return None


def _answer(status: int, reason: bytes, body: bytes, crc: bool = True) -> bytes:
    head = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: " + _JSON,
        b"Content-Length: %d" % len(body),
        b"x-amzn-RequestId: chaos",
    ]
    if crc:
        head.append(b"x-amz-crc32: %d" % zlib.crc32(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bool]:
    """One HTTP/1.x response from `reader`: (head with the final CRLFCRLF, body, closes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    closes = headers.get(b"connection", b"").lower() == b"close"
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            body += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = await reader.readuntil(b"\r\n")
                    body += trailer
                    if trailer == b"\r\n":
                        return head, bytes(body), closes
            body += await reader.readexactly(size + 2)
    if b"content-length" in headers:
        return head, await reader.readexactly(int(headers[b"content-length"])), closes
    return head, await reader.read(), True


def _with_crc(head: bytes, crc: int) -> bytes:
    lines = head[:-4].split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"x-amz-crc32:")]
    return b"\r\n".join([*kept, b"x-amz-crc32: %d" % crc]) + b"\r\n\r\n"


class ChaosProxy:
    """See the module docstring. `rate` is the share of requests that get a fault; `faults`
    overrides the weights (a subset of FAULTS), `stall` the seconds a stall lasts."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        seed: int = 0,
        rate: float = 0.25,
        faults: dict[str, float] | None = None,
        stall: float = 1.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.rate = rate
        weights = dict(FAULTS if faults is None else faults)
        unknown = set(weights) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.names = list(weights)
        self.weights = [weights[n] for n in self.names]
        self.stall = stall
        self.enabled = True
        #: Scripted faults, used before any random draw: (DynamoDB action, fault) pairs, each
        #: applied once, in order, to the next request of that action.
        self.plan: list[tuple[str, str]] = []
        self.log: list[Fault] = []
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("ChaosProxy not started")
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> Counter[str]:
        """How many requests got each fault ("forward" included)."""
        return Counter(f.fault for f in self.log)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _draw(self, action: str | None) -> str:
        for i, (wanted, fault) in enumerate(self.plan):
            if wanted == action:
                del self.plan[i]
                return fault
        if not self.enabled or self.rng.random() >= self.rate:
            return "forward"
        return self.rng.choices(self.names, self.weights)[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # stop() cancels connection tasks: end quietly (asyncio.streams logs a cancelled
        # client_connected_cb task as "Exception in callback").
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            buf = bytearray()
            while True:
                parsed = parse_request(buf)
                while parsed is None:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                    parsed = parse_request(buf)
                info, end = parsed
                raw = bytes(buf[:end])
                del buf[:end]
                fault = self._draw(info.action)
                self.log.append(
                    Fault(info.action, fault, _partition_key(info.body), time.monotonic())
                )
                if fault in ("reset_before", "stall_before"):
                    if fault == "stall_before":
                        await asyncio.sleep(self.stall)
                    _abort(writer)
                    return
                if fault in ("error_5xx", "throttle"):
                    if fault == "throttle":
                        writer.write(_answer(400, b"Bad Request", _THROTTLE))
                    else:
                        writer.write(_answer(500, b"Internal Server Error", _INTERNAL))
                    await writer.drain()
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection(self.target_host, self.target_port)
                up_r, up_w = upstream
                up_w.write(raw)
                await up_w.drain()
                head, body, closes = await read_response(up_r)
                if closes:
                    up_w.close()
                    upstream = None
                if not await self._reply(writer, fault, head, body, info):
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            _abort(writer)
        finally:
            self._tasks.discard(task)
            if upstream is not None:
                upstream[1].close()
            if not writer.is_closing():
                writer.close()

    async def _reply(
        self, writer: asyncio.StreamWriter, fault: str, head: bytes, body: bytes, info: RequestInfo
    ) -> bool:
        """Send the upstream answer as the fault says; False when the connection is gone."""
        if fault == "forward":
            writer.write(head + body)
        elif fault == "lost":
            _abort(writer)
            return False
        elif fault == "truncate":
            whole = head + body
            writer.write(whole[: max(1, len(whole) // 2)])
            await writer.drain()
            _abort(writer)
            return False
        elif fault == "stall_after":
            await asyncio.sleep(self.stall)
            _abort(writer)
            return False
        elif fault == "error_after":
            writer.write(_answer(500, b"Internal Server Error", _INTERNAL))
        elif fault == "bad_crc":
            writer.write(_with_crc(head, (zlib.crc32(body) + 1) & 0xFFFFFFFF) + body)
        else:
            raise AssertionError(fault)
        await writer.drain()
        return True


# -- raw ASGI requests in process ---------------------------------------------------------------


async def asgi_call(
    app: Callable[..., Awaitable[None]],
    headers: Sequence[tuple[bytes, bytes]],
    *,
    path: str = "/",
    method: str = "GET",
    query: bytes = b"",
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP request straight into an ASGI app with exactly these raw headers (no client
    library in between to validate them): (status, response headers, body)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
        "state": {},
    }
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    status = 0
    out_headers: list[tuple[bytes, bytes]] = []
    body = bytearray()

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, out_headers, bytes(body)


async def asgi_websocket(
    app: Callable[..., Awaitable[None]], headers: Sequence[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    """A websocket handshake straight into an ASGI app; the messages the app sent."""
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "wss",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
        "subprotocols": [],
        "state": {},
    }
    inbox = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    with contextlib.suppress(asyncio.CancelledError):
        await app(scope, receive, send)
    return sent
