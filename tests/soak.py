"""The fault soak (issue 8; spec 10 and 15): a realistic mix of requests through SessionMiddleware
and the chaos proxy to the real server, each answer reconciled with the table.

Virtual clients run in parallel, each on its own session and one request at a time, like a
browser tab: create, read, write a new key, overwrite a key, remove a key, cycle_id (login) and
flush (logout). Every write carries a marker unique to its request, so after each answer the
client reads its items back straight from the server (plain aiobotocore, no proxy) and tells:

* lost writes: acknowledged (200) markers that are no longer stored where the cookie points;
* applied-but-503: a 503 whose change DynamoDB applied anyway (marker stored, item deleted);
* orphans: items no client's cookie points to (a create whose answer was lost, then retried
  under another id);
* answers that are neither the app's nor the middleware's 503, wrong reads, cookie lifetimes that
  disagree with the item (spec 14), and the slowest answer against the budget that the store's
  settings allow (`SoakSettings.request_budget`).

`tests/test_soak.py` runs a short soak in ``make test``; ``make soak`` runs 2,000 requests per
server and transport (``SOAK_REQUESTS``) and prints each `SoakReport`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from chaos import ChaosProxy, asgi_call
from support import SECRET, hashed, key_of, sid

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps, OnInactivity, SessionMiddleware

INACTIVITY = timedelta(hours=12)
#: Store calls one request may make on its longest path with one conflict: the load, then a
#: write, the read of a conflict's current item and the write again (or take, create, one
#: collision retry).
CALLS_PER_REQUEST = 4
#: Event-loop and server slack on a loaded machine, on top of the store's own bounds.
SLACK = 1.0
UNAVAILABLE = b"Session store unavailable\n"
_MAX_AGE = re.compile(r"; Max-Age=(\d+);")
_EXPIRES = re.compile(r"; Expires=([^;]+)")


@dataclass(frozen=True)
class SoakSettings:
    """The soak's size and the store settings its time budget follows from."""

    requests: int = 150
    clients: int = 8
    seed: int = 2
    rate: float = 0.1  # share of DynamoDB requests that get a fault
    connect_timeout: float = 0.5
    read_timeout: float = 1.0
    max_attempts: int = 3
    save_attempts: int = 8

    def backoff(self, transport: str) -> float:
        """The longest total retry backoff of one store call (botocore standard mode: up to
        1 s x 2^i for throttling; the fast transport: 50 ms x 2^i)."""
        base = 1.0 if transport == "aiobotocore" else 0.05
        return sum(min(20.0, base * 2**i) for i in range(self.max_attempts - 1))

    def call_budget(self, transport: str) -> float:
        """The longest one store call may take: every attempt times out, plus the backoff."""
        per_attempt = self.connect_timeout + self.read_timeout
        return self.max_attempts * per_attempt + self.backoff(transport)

    def request_budget(self, transport: str) -> float:
        """The longest one request may take: its store calls, the merge backoff, slack."""
        merge = sum(min(0.2, 0.01 * 2**i) for i in range(CALLS_PER_REQUEST - 1))
        return CALLS_PER_REQUEST * self.call_budget(transport) + merge + SLACK

    @property
    def stall(self) -> float:
        """How long the proxy holds a stalled request or answer: past the read timeout."""
        return self.read_timeout + 0.3


@dataclass
class SoakReport:
    server: str
    transport: str
    settings: SoakSettings
    answers: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    lost_writes: int = 0
    applied_but_503: int = 0
    orphans: int = 0
    not_app: int = 0
    wrong_reads: int = 0
    wrong_state: int = 0
    bad_lifetimes: int = 0
    slowest: float = 0.0
    examples: list[str] = field(default_factory=list)
    _kinds: Counter[str] = field(default_factory=Counter)

    @property
    def budget(self) -> float:
        return self.settings.request_budget(self.transport)

    def note(self, text: str) -> None:
        """Keep an example, at most three of each kind (its first word, and whether it is about
        a 503), so that one frequent failure does not hide the others."""
        kind = text.split(" ", 1)[0] + (" 503" if " 503" in text else "")
        if self._kinds[kind] < 3 and len(self.examples) < 20:
            self._kinds[kind] += 1
            self.examples.append(text)

    def render(self) -> str:
        s = self.settings
        lines = [
            f"== soak: {self.server}, transport {self.transport}: {sum(self.answers.values())} "
            f"requests, {s.clients} clients, fault rate {s.rate:.0%}, seed {s.seed} ==",
            f"answers: {dict(sorted(self.answers.items()))}",
            f"ops: {dict(sorted(self.ops.items()))}",
            f"faults injected: {dict(sorted(self.faults.items()))}",
            f"lost writes: {self.lost_writes}",
            f"applied-but-503: {self.applied_but_503}",
            f"orphan items: {self.orphans}",
            f"answers neither the app's nor a 503: {self.not_app}",
            f"wrong reads: {self.wrong_reads}   wrong stored state: {self.wrong_state}",
            f"cookie lifetimes disagreeing with the item: {self.bad_lifetimes}",
            f"slowest answer: {self.slowest:.2f} s (budget {self.budget:.2f} s: "
            f"{CALLS_PER_REQUEST} calls x ({s.max_attempts} attempts x "
            f"({s.connect_timeout} + {s.read_timeout}) s + {s.backoff(self.transport):.2f} s "
            f"backoff) + merge backoff + {SLACK} s slack)",
        ]
        if self.examples:
            lines.append("examples:")
            lines.extend(f"  {e}" for e in self.examples)
        return "\n".join(lines)


def app_for_soak() -> Any:
    """The soak's ASGI app: the path is the operation, the query its key and marker."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        op = scope["path"].strip("/")
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = b"ok " + query.get("m", "-").encode()
        if op in ("create", "write", "last"):
            session[query["k"]] = query["m"]
        elif op == "pop":
            session.pop(query["k"], None)
        elif op == "cycle":
            session.cycle_id()
            session[query["k"]] = query["m"]
        elif op == "flush":
            session.flush()
        elif op == "read":
            body = json.dumps(dict(session.items()), sort_keys=True).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def decode_data(payload: bytes) -> dict[str, Any]:
    """Session data from a stored payload, decoded without the library (format byte first)."""
    if payload[:1] == b"\x02":
        payload = b"\x01" + zlib.decompress(payload[1:])
    assert payload[:1] == b"\x01", payload[:1]
    data: dict[str, Any] = msgspec.msgpack.decode(payload[1:])
    return data


class Soak:
    """One soak run; `run()` returns its report."""

    def __init__(
        self,
        raw: Any,
        endpoint_url: str,
        server: str,
        transport: str,
        table: str,
        settings: SoakSettings,
    ) -> None:
        self.raw = raw
        self.endpoint_url = endpoint_url
        self.transport = transport
        self.table = table
        self.settings = settings
        self.report = SoakReport(server, transport, settings)
        self.rng = random.Random(settings.seed)
        self.current: dict[int, str | None] = {}  # client -> the id its cookie names
        self.failed_creates: dict[str, int] = {}  # marker of a 503 create/cycle -> client
        self.proxy: ChaosProxy | None = None

    async def stored(self, session_id: str | None) -> dict[str, Any] | None:
        """The live data under an id, read straight from the server (no proxy)."""
        if session_id is None:
            return None
        result = await self.raw.get_item(
            TableName=self.table, Key=key_of(session_id), ConsistentRead=True
        )
        item = result.get("Item")
        if item is None or int(item["expire_at"]["N"]) <= time.time():
            return None
        return decode_data(item["data"]["B"])

    async def expire_at(self, session_id: str) -> int | None:
        result = await self.raw.get_item(
            TableName=self.table, Key=key_of(session_id), ConsistentRead=True
        )
        item = result.get("Item")
        return None if item is None else int(item["expire_at"]["N"])

    async def run(self) -> SoakReport:
        url = urlsplit(self.endpoint_url)
        s = self.settings
        proxy = ChaosProxy(
            url.hostname or "127.0.0.1", url.port or 80, seed=s.seed, rate=s.rate, stall=s.stall
        )
        await proxy.start()
        store = DynamoDBStore(
            props=DynamoDBStoreProps(table_name=self.table),
            endpoint_url=proxy.endpoint_url,
            region_name="us-east-1",
            transport=self.transport,  # type: ignore[arg-type]
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            max_attempts=s.max_attempts,
        )
        try:
            proxy.enabled = False
            async with store:
                await store.create_table()
                proxy.enabled = True
                proxy.log.clear()
                app = SessionMiddleware(
                    app_for_soak(),
                    store=store,
                    secret_keys=SECRET,
                    expiry=OnInactivity(INACTIVITY),
                    save_attempts=s.save_attempts,
                )
                share = [
                    s.requests // s.clients + (i < s.requests % s.clients) for i in range(s.clients)
                ]
                await asyncio.gather(*(self.client(app, i, n, proxy) for i, n in enumerate(share)))
                proxy.enabled = False
            await self.final_scan()
        finally:
            self.report.faults = proxy.counts()
            await proxy.stop()
        return self.report

    async def client(self, app: Any, client: int, count: int, proxy: ChaosProxy) -> None:
        """One browser tab: `count` requests in a row on its own session."""
        cookie: str | None = None  # the signed value the browser holds
        model: dict[str, Any] | None = None  # what the client expects to be stored
        report = self.report
        for n in range(count):
            marker = f"c{client}n{n}s{self.settings.seed}"
            if model is None:
                op = "create"
            else:
                op = self.rng.choices(
                    ["read", "write", "last", "pop", "cycle", "flush"], [30, 30, 12, 10, 10, 4]
                )[0]
                if op == "pop" and len(model) < 2:
                    op = "write"
            key = "last" if op == "last" else f"m{n}"
            if op == "pop":
                assert model is not None
                key = self.rng.choice(sorted(model))
            report.ops[op] += 1
            headers = [] if cookie is None else [(b"cookie", f"id={cookie}".encode())]
            query = f"k={key}&m={marker}".encode()
            started = time.monotonic()
            status, out, body = await asgi_call(app, headers, path=f"/{op}", query=query)
            elapsed = time.monotonic() - started
            report.slowest = max(report.slowest, elapsed)
            if elapsed > report.budget:
                report.note(f"{op} {marker}: answered after {elapsed:.2f} s")
            report.answers[str(status)] += 1
            old_id = None if cookie is None else sid(cookie)
            set_cookies = [v.decode("latin-1") for k, v in out if k == b"set-cookie"]
            if status == 200:
                expected_body = (
                    json.dumps(model or {}, sort_keys=True).encode()
                    if op == "read"
                    else b"ok " + marker.encode()
                )
                if op == "read" and body != expected_body:
                    report.wrong_reads += 1
                    report.note(f"read {marker}: saw {body[:120]!r}, expected {model}")
                elif op != "read" and body != expected_body:
                    report.not_app += 1
                cookie, new_id, expired = self.follow(cookie, set_cookies)
                self.proxy = proxy
                window = (started, time.monotonic())
                model = await self.after_ok(op, key, marker, model, old_id, new_id, expired, window)
                if new_id is not None:
                    await self.check_lifetime(new_id, set_cookies, started, marker)
            elif status == 503 and body == UNAVAILABLE and any(k == b"retry-after" for k, _ in out):
                self.proxy = proxy
                window = (started, time.monotonic())
                model = await self.after_503(op, key, marker, model, old_id, client, window)
            else:
                report.not_app += 1
                report.note(f"{op} {marker}: answered {status} {body[:80]!r}")
                model = await self.stored(old_id)
            self.current[client] = None if cookie is None or model is None else sid(cookie)

    def follow(
        self, cookie: str | None, set_cookies: list[str]
    ) -> tuple[str | None, str | None, bool]:
        """The browser's cookie after the response: (value, a new id if set, expired)."""
        for header in set_cookies:
            if not header.startswith("id="):
                continue
            value = header.split(";", 1)[0][3:]
            if "Max-Age=0;" in header or not value:
                return None, None, True
            new = sid(value)
            return value, (new if cookie is None or sid(cookie) != new else None), False
        return cookie, None, False

    async def after_ok(
        self,
        op: str,
        key: str,
        marker: str,
        model: dict[str, Any] | None,
        old_id: str | None,
        new_id: str | None,
        expired: bool,
        window: tuple[float, float],
    ) -> dict[str, Any] | None:
        """Reconcile an acknowledged answer: the table must hold exactly the model."""
        report = self.report
        before = dict(model or {})
        if op == "flush":
            if not expired:
                report.wrong_state += 1
                report.note(f"flush {marker}: the cookie was not expired")
            if await self.stored(old_id) is not None:
                report.wrong_state += 1
                report.note(f"flush {marker}: the item is still there")
            return None
        expected = dict(before)
        if op in ("create", "write", "last", "cycle"):
            expected[key] = marker
        elif op == "pop":
            expected.pop(key, None)
        if op in ("create", "cycle") and new_id is None:
            # the write was dropped: the session ended (or was never stored)
            report.lost_writes += sum(1 for k in expected if k.startswith("m") or k == "last")
            report.note(
                f"{op} {marker}: 200 without a new session cookie (expired={expired}; "
                f"{self.faults_on(old_id, window)})"
            )
            where = None
        elif expired:
            report.lost_writes += len(expected)
            report.note(
                f"{op} {marker}: 200 but the cookie was expired; {len(expected)} keys lost "
                f"({self.faults_on(old_id, window)})"
            )
            where = None
        else:
            where = new_id if new_id is not None else old_id
        stored = await self.stored(where)
        if where is not None:
            got = stored or {}
            lost = [k for k, v in expected.items() if got.get(k) != v]
            extra = [k for k in got if k not in expected]
            if lost:
                report.lost_writes += len(lost)
                report.note(f"{op} {marker}: 200 but {lost} are not stored (stored {got})")
            if extra:
                report.wrong_state += 1
                report.note(f"{op} {marker}: stored keys {extra} should not be there")
        if op == "cycle" and new_id is not None and await self.stored(old_id) is not None:
            report.wrong_state += 1
            report.note(f"cycle {marker}: the old id still has an item")
        return stored

    async def after_503(
        self,
        op: str,
        key: str,
        marker: str,
        model: dict[str, Any] | None,
        old_id: str | None,
        client: int,
        window: tuple[float, float],
    ) -> dict[str, Any] | None:
        """Reconcile a 503: the change must not be stored, the old state must be intact."""
        report = self.report
        stored = await self.stored(old_id)
        before = model or {}
        applied = False
        if op in ("write", "last"):
            applied = stored is not None and stored.get(key) == marker
        elif op == "pop":
            applied = stored is not None and key not in stored
        elif op == "flush":
            applied = stored is None
        elif op == "cycle":
            applied = stored is None
            if not applied:
                self.failed_creates[marker] = client
        elif op == "create":
            self.failed_creates[marker] = client
        if applied:
            report.applied_but_503 += 1
            faults = self.faults_on(old_id, window)
            report.note(f"{op} {marker}: 503 although DynamoDB applied it ({faults})")
        if op != "flush" and model is not None:
            got = stored or {}
            lost = [k for k, v in before.items() if got.get(k) != v and not (applied and k == key)]
            if lost:
                report.lost_writes += len(lost)
                report.note(f"{op} {marker}: after a 503, acknowledged {lost} are gone")
        return stored

    def faults_on(self, session_id: str | None, window: tuple[float, float]) -> str:
        """What the proxy did to the calls on this id within the request's time window."""
        if session_id is None or self.proxy is None:
            return "?"
        key = key_of(session_id)["session_id"]["S"]
        start, end = window
        seen = [
            f"{f.action}:{f.fault}" for f in self.proxy.log if f.key == key and start <= f.at <= end
        ]
        return ", ".join(seen) or "no call seen"

    async def check_lifetime(
        self, session_id: str, set_cookies: list[str], started: float, marker: str
    ) -> None:
        """Spec 14: a new OnInactivity cookie says Max-Age=43200, and its Expires is the
        item's expire_at."""
        header = next(h for h in set_cookies if h.startswith("id="))
        max_age = _MAX_AGE.search(header)
        expires = _EXPIRES.search(header)
        stored = await self.expire_at(session_id)
        want = int(INACTIVITY.total_seconds())
        if max_age is None or expires is None or stored is None:
            self.report.bad_lifetimes += 1
            return
        stamp = parsedate_to_datetime(expires.group(1)).timestamp()
        if int(max_age.group(1)) != want or abs(stamp - stored) > 1:
            self.report.bad_lifetimes += 1
            if self.report.bad_lifetimes <= 3:
                self.report.note(
                    f"cookie {marker}: Max-Age={max_age.group(1)} (want {want}), Expires "
                    f"{stamp:.0f} vs expire_at {stored}"
                )

    async def final_scan(self) -> None:
        """Items no client points to are orphans; one holding a 503's marker was applied."""
        live = {hashed(i) for i in self.current.values() if i is not None}
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            page = await self.raw.scan(**kwargs)
            for item in page.get("Items", []):
                if item["session_id"]["S"].removeprefix("SESSIONS::TOWER::") in live:
                    continue
                if int(item["expire_at"]["N"]) <= time.time():
                    continue
                data = decode_data(item["data"]["B"])
                mine = [m for m in data.values() if m in self.failed_creates]
                if mine:
                    self.report.applied_but_503 += len(mine)
                    self.report.note(f"503 create/cycle {mine} stored an item anyway")
                self.report.orphans += 1
                self.report.note(f"orphan item holding {sorted(data)}")
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
