"""DynamoDB's data plane on bare asyncio protocols: HTTP/1.1 to one host, answers parsed by
httptools (C), a small keep-alive pool, TLS through the loop's own transport.

It does only what DynamoDB's JSON API needs (``POST /``, ``Content-Length`` or chunked answers)
and replaces aiohttp's client machinery, which cost three times the wire work. Signing, retries
and answer parsing are `FastTransport`'s; this module sends one signed request.

Retry safety: a connection that failed before any byte of the request was written (connect
failed, or a pooled connection the server had already closed) is retried for every call. Once
bytes are written the request may have reached DynamoDB, so the failure is `MayHaveArrived` and
only reads are retried (`RETRY_AFTER_SENDING`), writes too where their sender recognises its own
earlier application (`retry_sent_writes`, as `DynamoDBStore` does by write token). A pooled
connection is checked before use: one the server closed while it sat idle is never written to.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from ._fast import FastTransport, MayHaveArrived

_CLOSE_WAIT = 1.0  # seconds to wait for a closed connection's TLS shutdown before aborting it


class _NotSent(ConnectionError):
    """The request was not written at all: safe to send again."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, collects the one answer it gets."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes, str | None]] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.broken = False  # the server closed it, or it is in an unknown state
        self._chunks: list[bytes] = []
        self._crc: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- the request -----------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, timeout: float) -> asyncio.Future[Any]:
        """Write one request; the future gets (status, body, x-amz-crc32)."""
        assert self.transport is not None and self.answer is None
        loop = asyncio.get_running_loop()
        self.answer = answer = loop.create_future()
        self._chunks, self._crc = [], None
        self.transport.write(head + body)
        self._timer = loop.call_later(timeout, self._fail, TimeoutError("read timed out"))
        return answer

    def usable(self) -> bool:
        return not self.broken and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.broken = True
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        self.broken = True
        if self._timer is not None:
            self._timer.cancel()
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(MayHaveArrived(f"{type(exc).__name__}: {exc}"))
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.broken = True
        if self.answer is not None:
            self._fail(ConnectionResetError("closed by the server before answering"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self.answer is not None:
            self._fail(exc or ConnectionResetError("connection lost before the answer"))
        if not self.lost.done():
            self.lost.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"x-amz-crc32":
            self._crc = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.parser.should_keep_alive():
            self.broken = True
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            status = self.parser.get_status_code()
            answer.set_result((status, b"".join(self._chunks), self._crc))


class WireTransport(FastTransport):
    """`FastTransport` with its HTTP on asyncio protocols and httptools (no proxy support)."""

    def __init__(self, **opts: Any) -> None:
        if opts.get("proxy_url"):
            raise ValueError("WireTransport does not go through proxies")
        super().__init__(**opts)
        url = urlsplit(self.endpoint_url)
        self._host = url.hostname or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._server_hostname = self._host if url.scheme == "https" else None
        if url.scheme == "https" and self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()
        self._request_line = f"POST {url.path or '/'} HTTP/1.1\r\n".encode()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    async def close(self) -> None:
        """Close every connection (in use ones as their calls end) and wait until they are."""
        self._closed = True
        conns = list(self._all)
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if conns:
            done = asyncio.gather(*(asyncio.shield(c.lost) for c in conns))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done, _CLOSE_WAIT)
            for conn in conns:
                if conn.transport is not None and not conn.lost.done():
                    conn.transport.abort()
        self._closed = False  # usable again: it reopens on the next call

    async def _post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str | None]:
        head = self._request_line + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        head += b"Content-Length: %d\r\nAccept-Encoding: identity\r\n\r\n" % len(body)
        conn = await self._checkout()
        reuse = False
        try:
            status, data, crc = await conn.send(head, body, self._read_timeout)
            reuse = True
            return status, data, crc
        finally:
            self._checkin(conn, reuse)

    async def _checkout(self) -> _Connection:
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(self._pool_size)
        if slots.locked():  # a full pool: wait at most as long as a connect may take
            try:
                await asyncio.wait_for(slots.acquire(), self._connect_timeout)
            except asyncio.TimeoutError:
                raise _NotSent("no pooled connection became free in time") from None
        else:
            await slots.acquire()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()  # closed by the server while idle: never written to
        try:
            conn = await self._connect()
        except BaseException:
            slots.release()
            raise
        self._all.add(conn)
        conn.lost.add_done_callback(lambda _: self._all.discard(conn))
        return conn

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                    ssl_handshake_timeout=self._connect_timeout if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise _NotSent(f"connect to {self._host}:{self._port} failed: {exc!r}") from exc
        return conn

    def _checkin(self, conn: _Connection, reuse: bool) -> None:
        if reuse and not self._closed and conn.usable():
            self._idle.append(conn)
        else:
            conn.close()
        assert self._slots is not None
        self._slots.release()
