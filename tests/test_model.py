"""Model-based concurrency test (issue 8; README "Concurrency and consistency"; spec 9 and 15).

Hypothesis draws a few parallel requests on one stored session (each a short list of operations:
set its own key, set a shared key, delete a key, pop every loaded key, clear, flush, cycle_id,
a nested mutation, set_expiry, a read-only touch) and a schedule. Every store call of every
request is a scheduling point: `GateStore` wraps the real DynamoDBStore and waits for the
scheduler before delegating, so the schedule decides the order of every load and write while the
real DynamoDB calls run, one at a time. Afterwards the table (read with plain aiobotocore, then
loaded through the store) and every response are checked against a sequential model that replays
each request's own changes at its linearization point (its last successful write; for an id cycle,
the write that removed the old item):

* changes to different keys are all kept; the same key holds the value of the later writer;
* emptying by removing keys is a per-key change and merges; only flush()/clear() end or replace
  the whole session;
* nothing is written to a session that had ended, and the response that lost that race expires
  the cookie; a write is only dropped when the session had really ended;
* cycle_id() moves everything stored at the moment it took the old item (other requests'
  acknowledged writes included) to the new id, and the old id is gone;
* a per-session set_expiry() is kept (policy and expire_at) by concurrent touches and merges.

Sizes come from the hypothesis profile: ``HYPOTHESIS_PROFILE=soak`` (``make soak``) runs many more
examples than the default ``ci`` profile.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from chaos import asgi_call
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import (
    SECRET,
    T0,
    TRANSPORTS,
    Clock,
    at,
    dynamo_store,
    key_of,
    read_item,
    sid,
    signed,
)

from asgi_dynamo_session import AtDateTime, DynamoDBStore, OnInactivity, SessionMiddleware

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}
# ci (make test): few examples per mix and no shrinking, so a failing run stays short; the
# trace in the failure message shows the schedule. soak (make soak): many examples, shrunk.
settings.register_profile(
    "ci", max_examples=6, phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON
)
settings.register_profile("soak", max_examples=150, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Fixed clocks, so expiry dates are exact: the shared session is created at CREATED, the
#: parallel requests (and the store's own conditions) run one second later, so a touch is due.
CREATED = T0 + 0.25
NOW = T0 + 1.25
INACTIVITY = timedelta(hours=12)
#: When a session written at CREATED / by a request at NOW ends under OnInactivity(12 h); the
#: stored expire_at is that moment in whole seconds (rounded either way).
CREATED_END = CREATED + INACTIVITY.total_seconds()
REQUEST_END = NOW + INACTIVITY.total_seconds()
INITIAL: dict[str, Any] = {"a": "a0", "b": "b0", "n": {"x": "x0"}}
OPS = ("set", "same", "delete", "pop_last", "clear", "flush", "cycle", "nested", "expiry", "touch")
WRITES = ("create", "save", "delete", "touch", "take", "remove")
MAX_AGE = re.compile(r"; Max-Age=(\d+);")

#: Which request a store call belongs to (-1: the harness itself, not gated).
REQUEST: contextvars.ContextVar[int] = contextvars.ContextVar("request", default=-1)


# -- the scheduler and the gate store ------------------------------------------------------------


@dataclass
class Call:
    """One store call as it ran: who, what, on which session id, and how it ended."""

    req: int
    name: str
    session_id: str | None
    ok: bool
    result: Any = None

    @property
    def wrote(self) -> bool:
        """A write that took effect (a take that found nothing, or a touch answering False,
        changed nothing)."""
        if self.name not in WRITES or not self.ok:
            return False
        if self.name == "take":
            return bool(self.result)
        return not (self.name == "touch" and self.result is False)

    def __str__(self) -> str:
        short = "-" if self.session_id is None else self.session_id[:6]
        outcome = "ok" if self.ok else f"raised {self.result}"
        if self.ok and self.name in ("take", "touch"):
            outcome = f"-> {bool(self.result)}" if self.name == "take" else "ok"
        if self.ok and self.name == "load":
            outcome = f"-> {self.result!r}"
        return f"r{self.req} {self.name}({short}) {outcome}"


class Scheduler:
    """Lets exactly one request run at a time, chosen by the drawn schedule, whenever every
    unfinished request is waiting at a store call."""

    def __init__(self, choices: list[int]) -> None:
        self.choices = choices
        self.step = 0
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.arrived = asyncio.Event()
        self.log: list[Call] = []

    async def point(self, req: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[req] = future
        self.arrived.set()
        await future

    async def run(self, tasks: dict[int, asyncio.Task[Any]]) -> None:
        while True:
            pending = [t for t in tasks.values() if not t.done()]
            if not pending:
                return
            if all(i in self.waiting for i, t in tasks.items() if not t.done()):
                ready = sorted(self.waiting)
                choice = self.choices[self.step] if self.step < len(self.choices) else 0
                self.step += 1
                self.waiting.pop(ready[choice % len(ready)]).set_result(None)
                continue
            self.arrived.clear()
            signal = asyncio.ensure_future(self.arrived.wait())
            await asyncio.wait([signal, *pending], timeout=30, return_when=asyncio.FIRST_COMPLETED)
            signal.cancel()


class GateStore:
    """The real store behind a scheduling point per call (a wrapper, not a mock: every call
    still goes to DynamoDB), logging each call and its outcome in order."""

    def __init__(self, inner: DynamoDBStore) -> None:
        self.inner = inner
        self.scheduler: Scheduler | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _gated(self, name: str, session_id: str | None, *args: Any, **kwargs: Any) -> Any:
        req = REQUEST.get()
        sched = self.scheduler
        if sched is None or req < 0:
            return await getattr(self.inner, name)(*args, **kwargs)
        await sched.point(req)
        try:
            result = await getattr(self.inner, name)(*args, **kwargs)
        except Exception as exc:
            if hasattr(args[0], "id"):  # a Record: create, save, touch, remove
                session_id = args[0].id
            sched.log.append(Call(req, name, session_id, False, type(exc).__name__))
            raise
        shown: Any = result
        if hasattr(args[0], "id"):
            session_id = args[0].id
        elif name == "load":
            shown = None if result is None else _plain(result.data)
        sched.log.append(Call(req, name, session_id, True, shown))
        return result

    async def create(self, record: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("create", None, record, *args, **kwargs)

    async def save(self, record: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("save", record.id, record, *args, **kwargs)

    async def load(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("load", session_id, session_id, *args, **kwargs)

    async def delete(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("delete", session_id, session_id, *args, **kwargs)

    async def touch(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("touch", getattr(target, "id", target), target, *args, **kwargs)

    async def take(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("take", session_id, session_id, *args, **kwargs)

    async def remove(self, record: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._gated("remove", None, record, *args, **kwargs)


def _plain(data: Any) -> Any:
    """A deep copy through MessagePack (what the store would round-trip)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(data))


# -- requests and what each one did ---------------------------------------------------------------


@dataclass
class Program:
    initial_expiry: bool
    requests: list[list[str]]
    schedule: list[int]

    def __str__(self) -> str:
        reqs = ", ".join(f"r{i}={ops}" for i, ops in enumerate(self.requests))
        return f"initial set_expiry={self.initial_expiry}; {reqs}; schedule={self.schedule}"


#: Operation mixes, each its own property so that every defect shows on its own.
MIXES = {
    "keys": ("set", "same", "delete", "nested", "touch"),
    "emptying": ("set", "same", "pop_last", "delete"),
    "cycle": ("set", "same", "cycle", "nested", "touch"),
    "expiry": ("expiry", "touch", "set", "same"),
    "whole": ("clear", "flush", "set", "same", "pop_last"),
    "all": OPS,
}


@st.composite
def programs(draw: st.DrawFn, ops_of: tuple[str, ...]) -> Program:
    count = draw(st.integers(2, 4))
    requests = []
    for _ in range(count):
        ops = draw(st.lists(st.sampled_from(ops_of), min_size=1, max_size=3, unique=True))
        if "flush" in ops:  # flush() ends the request's work on the session
            ops = [op for op in ops if op != "flush"] + ["flush"]
        requests.append(ops)
    schedule = draw(st.lists(st.integers(0, 3), max_size=48))
    return Program(draw(st.booleans()), requests, schedule)


def policy_at(req: int) -> float:
    """The AtDateTime end that request `req` gives its session (the harness uses -1)."""
    return T0 + 600 + req


@dataclass
class Seen:
    """What one request's app saw and left."""

    loaded_id: str | None = None
    seen: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    cookies: list[str] = field(default_factory=list)
    body: bytes = b""


def apply_op(session: Any, op: str, req: int, seen: dict[str, Any]) -> None:
    mark = f"v{req}"
    if op == "set":
        session[f"k{req}"] = mark
    elif op == "same":
        session["s"] = mark
    elif op == "delete":
        session.pop("a", None)
    elif op == "pop_last":  # every key this request loaded: the session empties by key removal
        for key in seen:
            session.pop(key, None)
    elif op == "clear":
        session.clear()
        session[f"c{req}"] = mark
    elif op == "flush":
        session.flush()
    elif op == "cycle":
        session.cycle_id()
        session[f"y{req}"] = mark
    elif op == "nested":
        nested = session.get("n")
        if isinstance(nested, dict):
            nested[f"x{req}"] = mark
        else:
            session["n"] = {f"x{req}": mark}
    elif op == "expiry":
        session.set_expiry(AtDateTime(at(policy_at(req))))
    elif op == "touch":
        session.get("a")
    else:
        raise AssertionError(op)


def make_app(program: Program, seen: list[Seen]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        req = int(scope["path"].strip("/"))
        session = scope["session"]
        obs = seen[req]
        obs.loaded_id = session.id
        obs.seen = _plain(dict(dict.items(session)))
        for op in program.requests[req]:
            apply_op(session, op, req, obs.seen)
        obs.final = _plain(dict(dict.items(session)))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    return app


# -- the sequential model -------------------------------------------------------------------------


@dataclass
class Live:
    data: dict[str, Any]
    policy: float | None  # an AtDateTime end, or None for the middleware's OnInactivity
    expire_at: float  # the exact end; the item holds it in whole seconds


def kind_of(ops: list[str], obs: Seen) -> str:
    if obs.loaded_id is None:
        return "new" if obs.final else "none"
    if "flush" in ops:
        return "end"
    if "cycle" in ops:
        return "cycle"
    if "clear" in ops:
        return "whole" if obs.final else "end"
    if obs.final != obs.seen or "expiry" in ops:
        return "perkey"
    return "touch"


def diff_apply(
    before: dict[str, Any], after: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    """This request's own per-key changes (a nested one as a change of its top-level key) on
    top of `base`."""
    merged = dict(base)
    for key in before.keys() - after.keys():
        merged.pop(key, None)
    for key, value in after.items():
        if key not in before or before[key] != value:
            merged[key] = value
    return merged


def cookie_kind(cookies: list[str]) -> tuple[str, str | None]:
    """("none" | "expire" | "set", signed value) from a response's Set-Cookie headers."""
    ours = [c for c in cookies if c.startswith("id=")]
    if not ours:
        return "none", None
    last = ours[-1]
    value = last.split(";", 1)[0][3:]
    if "Max-Age=0;" in last or not value:
        return "expire", None
    return "set", value


def expire_at_for(policy: float | None) -> float:
    """The end a request's write or touch gives a session with this policy."""
    return REQUEST_END if policy is None else policy


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    live: dict[str, Live] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)

    def bad(self, text: str) -> None:
        self.violations.append(text)


def check(
    program: Program, start: str, initial: Live, log: list[Call], seen: list[Seen]
) -> Verdict:
    """Replay the model along the call log; every disagreement becomes a violation."""
    verdict = Verdict(live={start: initial}, ids={start})
    live = verdict.live
    kinds = [kind_of(ops, obs) for ops, obs in zip(program.requests, seen, strict=True)]
    lin: dict[int, int] = {}  # request -> index of its linearization point in the log
    created: dict[int, str] = {}
    touched = {c.req for c in log if c.name == "touch"}
    for req, kind in enumerate(kinds):
        calls = [(i, c) for i, c in enumerate(log) if c.req == req]
        for _, c in calls:
            if c.name == "create" and c.ok and c.session_id is not None:
                created[req] = c.session_id
                verdict.ids.add(c.session_id)
        if kind == "cycle":
            removal = [
                i
                for i, c in calls
                if c.name in ("take", "delete", "remove")
                and c.wrote
                and c.session_id == seen[req].loaded_id
            ]
            if removal:
                lin[req] = removal[0]
        else:
            writes = [i for i, c in calls if c.wrote]
            if writes:
                lin[req] = writes[0]
            saves = [c for _, c in calls if c.wrote and c.name in ("save", "remove")]
            if len(saves) > 1:  # the app changes nothing after the response started
                verdict.bad(f"r{req}: {len(saves)} writes where one was due (a redundant save)")
    wants = {r for r, k in enumerate(kinds) if k not in ("none", "touch") or r in touched}
    by_index = {i: req for req, i in lin.items()}
    last_call = {c.req: i for i, c in enumerate(log)}
    ended: set[int] = set()  # applied requests whose change ended the session
    live_when_dropped: dict[int, bool] = {}  # unapplied requests: was the session still live?

    for index, call in enumerate(log):
        if call.name == "load":
            model = live.get(call.session_id or "")
            want = None if model is None else model.data
            if call.result != want:
                verdict.bad(f"r{call.req}: load saw {call.result!r}, the model holds {want!r}")
        req = by_index.get(index)
        if req is not None:
            obs, kind, old = seen[req], kinds[req], seen[req].loaded_id or ""
            mine = policy_at(req) if "expiry" in program.requests[req] else None
            current = live.get(old)
            if kind == "new":
                new = created.get(req)
                if new is not None:
                    live[new] = Live(obs.final, mine, expire_at_for(mine))
            elif current is None:
                if kind == "end" or log[index].name in ("delete", "take", "remove"):
                    ended.add(req)  # removing what is already gone changes nothing
                else:
                    verdict.bad(f"r{req} ({kind}): a write succeeded on a session that had ended")
            elif kind == "end":
                del live[old]
                ended.add(req)
            elif kind == "touch":
                current.expire_at = expire_at_for(current.policy)
            else:
                if kind == "whole" or (kind == "cycle" and "clear" in program.requests[req]):
                    data = dict(obs.final)
                else:
                    data = diff_apply(obs.seen, obs.final, current.data)
                policy = mine if mine is not None else current.policy
                if kind == "cycle":
                    del live[old]
                    new = created.get(req)
                    if new is None:
                        verdict.bad(f"r{req}: the cycle took the old item but created no new one")
                    else:
                        live[new] = Live(data, policy, expire_at_for(policy))
                elif not data:
                    del live[old]  # emptied by removing keys: the session ends
                    ended.add(req)
                else:
                    live[old] = Live(data, policy, expire_at_for(policy))
        dropped = call.req in wants and call.req not in lin and last_call[call.req] == index
        if dropped:
            live_when_dropped[call.req] = seen[call.req].loaded_id in live
        # a touch may lose to a concurrent write harmlessly (that write renewed the expiry)
        if dropped and kinds[call.req] != "touch" and seen[call.req].loaded_id in live:
            verdict.bad(
                f"r{call.req} ({kinds[call.req]}): its write was dropped although the "
                "session was still live"
            )

    for req, (obs, kind) in enumerate(zip(seen, kinds, strict=True)):
        what, value = cookie_kind(obs.cookies)
        if obs.status != 200 or obs.body != b"app":
            verdict.bad(f"r{req}: answered {obs.status} {obs.body!r}, not the app's 200")
            continue
        if req not in wants:
            continue
        if req not in lin:
            if live_when_dropped.get(req) and kind == "touch":
                if what == "expire":
                    verdict.bad(f"r{req}: a touch lost to a write, yet the cookie was expired")
            elif what != "expire":
                verdict.bad(
                    f"r{req} ({kind}): its write was dropped but the cookie was not expired"
                )
            continue
        moved = kind in ("cycle", "new")
        if moved and (what != "set" or value is None or sid(value) != created.get(req)):
            verdict.bad(f"r{req} ({kind}): the response does not carry the new id's cookie")
        if req in ended and what != "expire":
            verdict.bad(f"r{req} ({kind}): the session ended but the cookie was not expired")
        if req not in ended and what == "expire":
            verdict.bad(f"r{req} ({kind}): acknowledged change, yet the cookie was expired")
        if what == "set":
            header = next(c for c in obs.cookies if c.startswith("id="))
            match = MAX_AGE.search(header)
            if match is None:
                verdict.bad(f"r{req}: Set-Cookie without Max-Age: {header}")
    return verdict


# -- the test -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=TRANSPORTS)
async def mstore(request: pytest.FixtureRequest, dynamodb_server: Any) -> AsyncIterator[Any]:
    table = f"model_{uuid4().hex[:10]}"
    async with dynamo_store(
        dynamodb_server.endpoint_url, table, transport=request.param, clock=Clock(NOW)
    ) as store:
        yield store


@pytest.mark.parametrize("mix", list(MIXES))
@settings(PROFILE)
@given(data=st.data())
async def test_parallel_requests_match_the_sequential_model(
    mstore: DynamoDBStore, raw: Any, mix: str, data: st.DataObject
) -> None:
    await run_example(mstore, raw, data.draw(programs(MIXES[mix]), label="program"))


async def run_example(mstore: DynamoDBStore, raw: Any, program: Program) -> None:
    gate = GateStore(mstore)
    seen = [Seen() for _ in program.requests]
    app = SessionMiddleware(
        make_app(program, seen),
        store=gate,  # type: ignore[arg-type]
        secret_keys=SECRET,
        expiry=OnInactivity(INACTIVITY),
        touch_after=timedelta(0),  # every read-only request refreshes: touches race too
        clock=Clock(NOW),
    )
    start = await start_session(mstore, program.initial_expiry)
    policy = policy_at(-1) if program.initial_expiry else None
    initial = Live(_plain(INITIAL), policy, CREATED_END if policy is None else policy)
    scheduler = Scheduler(program.schedule)
    gate.scheduler = scheduler
    cookie = [(b"cookie", f"id={signed(start)}".encode())]

    async def one(req: int) -> None:
        REQUEST.set(req)
        status, headers, body = await asgi_call(app, cookie, path=f"/{req}")
        seen[req].status, seen[req].body = status, body
        seen[req].cookies = [v.decode("latin-1") for k, v in headers if k == b"set-cookie"]

    tasks = {i: asyncio.create_task(one(i)) for i in range(len(program.requests))}
    await scheduler.run(tasks)
    await asyncio.gather(*tasks.values())

    verdict = check(program, start, initial, scheduler.log, seen)
    await compare_table(verdict, mstore, raw)
    trace = "\n".join(
        [
            str(program),
            *(str(call) for call in scheduler.log),
            *(
                f"r{i}: {s.status} cookie={cookie_kind(s.cookies)[0]} saw={s.seen} left={s.final}"
                for i, s in enumerate(seen)
            ),
        ]
    )
    assert not verdict.violations, "\n".join(["", *verdict.violations, "-- trace --", trace])


#: The minimal counterexamples hypothesis found on the pre-fix code, run on every `make test`
#: whatever the draw (issue 8 defect numbers). A schedule entry picks, among the requests
#: waiting at a store call (sorted), which one runs its call next.
REGRESSIONS = {
    # r1 pops every key it loaded while r0 adds k0: the item is deleted and k0 lost
    "5-pop-last-wipes-a-concurrent-write": Program(False, [["set"], ["pop_last"]], [1]),
    # r0 saves s between r1's load and its take: the new id lacks s
    "4-cycle-drops-an-acknowledged-write": Program(True, [["same"], ["cycle"]], [1, 0, 0]),
    # r0 loaded before r1 set its own expiry; r0's touch gives the item 12 h again
    "6-touch-overrides-set-expiry": Program(False, [["touch"], ["expiry"]], [0, 1, 1, 0]),
    # r0 loaded before r1 set its own expiry; r0's merged save keeps r1's policy, not its end
    "6-merge-overrides-set-expiry": Program(False, [["set"], ["expiry"]], [0, 1, 1, 0]),
    # found by the soak profile after the fixes: r0 sets k0 then s, r1's save of s wins; r0's
    # merged data equals its session but in another key order, so the session still counts
    # as modified and is saved a second time at the end of the body
    "redundant-save-after-a-merge": Program(False, [["set", "same"], ["same"]], [0, 1, 1]),
    # a flush racing a write and a cycle: nothing comes back under any id
    "9-flush-racing-a-write-and-a-cycle": Program(
        False, [["set"], ["flush"], ["cycle"]], [0, 1, 2, 1, 0, 2]
    ),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
async def test_known_races_match_the_sequential_model(
    mstore: DynamoDBStore, raw: Any, case: str
) -> None:
    await run_example(mstore, raw, REGRESSIONS[case])


async def compare_table(verdict: Verdict, store: DynamoDBStore, raw: Any) -> None:
    """Every id the example touched, read back raw and loaded, against the model."""
    for session_id in sorted(verdict.ids):
        item = await read_item(raw, store.props.table_name, key_of(session_id))
        loaded = await store.load(session_id)
        model = verdict.live.get(session_id)
        short = session_id[:6]
        if model is None:
            if item is not None or loaded is not None:
                verdict.bad(f"id {short}: the model has no session, the table holds one")
            continue
        if item is None or loaded is None:
            verdict.bad(f"id {short}: the model holds {model.data!r}, the table has no live item")
            continue
        if _plain(loaded.data) != model.data:
            verdict.bad(
                f"id {short}: stored {_plain(loaded.data)!r}, the model holds {model.data!r}"
            )
        text = item.get("expiry_policy", {}).get("S")
        got = None if text is None else text
        want = None if model.policy is None else f"at:{model.policy:f}"
        if got != want and not (got is not None and want is not None and _at(got) == model.policy):
            verdict.bad(f"id {short}: stored policy {got!r}, the model says {want!r}")
        expire_at = int(item["expire_at"]["N"])
        if abs(expire_at - model.expire_at) >= 1:
            verdict.bad(
                f"id {short}: expire_at is T0{expire_at - T0:+d}s, the model says "
                f"T0{model.expire_at - T0:+.2f}s"
            )


def _at(policy: str) -> float | None:
    kind, _, value = policy.partition(":")
    try:
        return float(value) if kind == "at" else None
    except ValueError:
        return None


async def start_session(store: DynamoDBStore, with_expiry: bool) -> str:
    """The session every request of an example shares, created through the middleware."""

    async def init(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        session.update(_plain(INITIAL))
        if with_expiry:
            session.set_expiry(AtDateTime(at(policy_at(-1))))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"init"})

    app = SessionMiddleware(
        init,
        store=store,
        secret_keys=SECRET,
        expiry=OnInactivity(INACTIVITY),
        clock=Clock(CREATED),
    )
    status, headers, _ = await asgi_call(app, [])
    assert status == 200
    (cookie,) = [v.decode() for k, v in headers if k == b"set-cookie"]
    return sid(cookie.split(";", 1)[0][3:])


# -- clock skew -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=TRANSPORTS)
async def skewed(request: pytest.FixtureRequest, dynamodb_server: Any) -> AsyncIterator[Any]:
    """A store whose clock each example sets (the worker's clock, slow or not)."""
    clock = Clock(T0)
    table = f"skew_{uuid4().hex[:10]}"
    async with dynamo_store(
        dynamodb_server.endpoint_url, table, transport=request.param, clock=clock
    ) as store:
        yield store, clock


@settings(PROFILE)
@given(
    ended_for=st.floats(0, 3),
    slow_by=st.floats(0.1, 4.5),
    write=st.booleans(),
)
async def test_a_slightly_slow_worker_never_revives_an_ended_session(
    skewed: Any, raw: Any, ended_for: float, slow_by: float, write: bool
) -> None:
    """Issue 8 defect 11: a worker whose clock is behind by less than the default clock_skew
    tolerance (5 s) must not refresh or save a session that has ended by the true clock."""
    store, clock = skewed
    clock.now = T0 + 0.5
    creator = SessionMiddleware(
        _setter({"user": "u"}),
        store=store,
        secret_keys=SECRET,
        expiry=OnInactivity(INACTIVITY),
        clock=clock,
    )
    status, headers, _ = await asgi_call(creator, [])
    assert status == 200
    (header,) = [v.decode() for k, v in headers if k == b"set-cookie"]
    session_id = sid(header.split(";", 1)[0][3:])
    item = await read_item(raw, store.props.table_name, key_of(session_id))
    assert item is not None
    end = int(item["expire_at"]["N"])
    true_now = end + ended_for  # the session has ended: expire_at <= now
    clock.now = true_now - max(slow_by, ended_for + 0.1)  # this worker still thinks it is live
    worker = SessionMiddleware(
        _setter({"late": "x"} if write else {}),
        store=store,
        secret_keys=SECRET,
        expiry=OnInactivity(INACTIVITY),
        touch_after=timedelta(0),
        clock=clock,
    )
    status, headers, body = await asgi_call(
        worker, [(b"cookie", f"id={signed(session_id)}".encode())]
    )
    after = await read_item(raw, store.props.table_name, key_of(session_id))
    revived = after is not None and int(after["expire_at"]["N"]) > end
    assert not revived, (
        f"a worker {true_now - clock.now:.2f}s slow {'saved' if write else 'refreshed'} a "
        f"session that ended {ended_for:.2f}s ago: expire_at moved from T0{end - T0:+d} to "
        f"T0{int(after['expire_at']['N']) - T0:+d}"
        if after
        else ""
    )
    assert status == 200 and body == b"app"
    cookies = [v.decode() for k, v in headers if k == b"set-cookie"]
    assert all("Max-Age=0;" in c for c in cookies if c.startswith(f"id={session_id}")), cookies


def _setter(values: dict[str, Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        session.get("user")
        session.update(values)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    return app
