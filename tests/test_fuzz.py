"""Fuzz tests (issue 8 defects 1, 7 and 14; spec points 2, 3 and 12): hostile cookie headers and
malformed stored items never raise out of the middleware and never answer 500.

Cookie headers are sent raw, straight into the ASGI app (no client library in between to refuse
them): arbitrary bytes, latin-1 text, separators, many cookies, our name repeated, a live signed
cookie hidden among junk. Stored items are written with a plain aiobotocore call: a well-formed
item with one attribute (or payload byte) broken, then requested with a valid signed cookie for
that id.
"""

from __future__ import annotations

import os
import secrets
import string
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from botocore.exceptions import ClientError
from chaos import asgi_call, asgi_websocket
from hypothesis import HealthCheck, Phase, example, given, reject, settings
from hypothesis import strategies as st
from support import EXPIRED_COOKIE, SECRET, TRANSPORTS, CountingStore, dynamo_store, key_of, signed

from asgi_dynamo_session import DynamoDBStore, SessionMiddleware

_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
    "print_blob": True,
}
settings.register_profile(
    "ci", max_examples=30, phases=[Phase.explicit, Phase.reuse, Phase.generate], **_COMMON
)
settings.register_profile("soak", max_examples=500, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

COOKIE_OCTETS = "".join(
    c for c in string.printable if c not in ' ",;\\\t\n\r\x0b\x0c'
)  # RFC 6265 cookie-octet, roughly


@pytest.fixture(scope="module")
async def cstore(dynamodb_server: Any) -> AsyncIterator[Any]:
    """For the cookie tests, which barely reach the store: one transport is enough."""
    table = f"fuzzc_{uuid4().hex[:10]}"
    async with dynamo_store(dynamodb_server.endpoint_url, table, transport=TRANSPORTS[0]) as s:
        yield s


@pytest.fixture(scope="module", params=TRANSPORTS)
async def fstore(request: pytest.FixtureRequest, dynamodb_server: Any) -> AsyncIterator[Any]:
    table = f"fuzz_{uuid4().hex[:10]}"
    async with dynamo_store(dynamodb_server.endpoint_url, table, transport=request.param) as s:
        yield s


def reader_app(seen: list[dict[str, Any]], write: bool = False) -> Any:
    """Answers 200 ``app``, recording the session data it saw (and writing a key if asked)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            seen.append(dict(scope["session"].items()))
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        session = scope["session"]
        seen.append(dict(session.items()))
        if write:
            session["fuzz"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    return app


async def request(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, list[str], bytes]:
    try:
        status, out, body = await asgi_call(app, headers)
    except Exception as exc:  # the property under test: nothing escapes the middleware
        raise AssertionError(f"the middleware raised {exc!r} for headers {headers!r}") from exc
    return status, [v.decode("latin-1") for k, v in out if k == b"set-cookie"], body


# -- cookie headers -----------------------------------------------------------------------------


def _replace(at: int, char: str, value: str) -> str:
    """`value` with the character at `at` replaced by a different one (so it cannot verify)."""
    if char == value[at]:
        char = "A" if value[at] != "A" else "B"
    return value[:at] + char + value[at + 1 :]


latin1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=120)
separators = st.sampled_from([";", "; ", ";;", " ;", ",", ", ", "\t;", "=", ";=", " "])
junk_value = st.one_of(
    latin1,
    st.text(COOKIE_OCTETS, max_size=100),
    # shaped like ours: 43 characters, a dot, 43 characters, any of them latin-1
    st.builds(
        lambda a, b, sep: a + sep + b,
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), min_size=43, max_size=43),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), min_size=43, max_size=43),
        st.sampled_from([".", ",", "", ".."]),
    ),
    # a real signature under a wrong id, or a real id with a broken signature: one character
    # replaced, by any latin-1 character (a non-ASCII one reaches the signature comparison)
    st.builds(
        _replace,
        st.integers(0, 86),
        st.characters(min_codepoint=0x21, max_codepoint=0xFF),
        st.builds(lambda: signed(secrets.token_urlsafe(32))),
    ),
)
other_cookie = st.builds(
    lambda name, value: f"{name}={value}", st.text(COOKIE_OCTETS, min_size=1, max_size=12), latin1
)
our_junk = st.builds(lambda value: f"id={value}", junk_value)


@st.composite
def cookie_headers(draw: st.DrawFn) -> list[bytes]:
    """One to three Cookie header values: raw bytes, or parts joined by separators."""
    headers = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            headers.append(draw(st.binary(max_size=200)))
            continue
        parts = draw(st.lists(st.one_of(our_junk, other_cookie, latin1), max_size=30))
        text = ""
        for part in parts:
            text += part + draw(separators)
        headers.append(text.encode("latin-1"))
    return headers


#: A well-formed id with a latin-1 byte in the signature half (defect 1's minimal case).
LATIN1_SIGNATURE = b"id=" + b"A" * 43 + b"." + b"\xe9" * 43


@settings(PROFILE)
@given(headers=cookie_headers())
@example(headers=[LATIN1_SIGNATURE])
@example(headers=[b"id=" + signed("B" * 43).encode()[:-1] + b"\xff"])
async def test_hostile_cookie_headers_are_no_session(
    cstore: DynamoDBStore, headers: list[bytes]
) -> None:
    counting = CountingStore(cstore)
    seen: list[dict[str, Any]] = []
    app = SessionMiddleware(reader_app(seen), store=counting, secret_keys=SECRET)
    status, cookies, body = await request(app, [(b"cookie", h) for h in headers])
    assert (status, body) == (200, b"app")
    assert seen == [{}]
    assert counting.calls["load"] == 0  # a tampered or malformed cookie never reaches the store
    assert counting.writes == 0
    assert cookies in ([], [EXPIRED_COOKIE]), cookies


@settings(PROFILE)
@given(junk=st.lists(junk_value, min_size=1, max_size=8), others=st.lists(other_cookie, max_size=4))
@example(junk=[""], others=[])
@example(junk=[signed("C" * 43)[:-1] + "A"], others=["theme=dark"])
async def test_a_dead_cookie_of_our_name_is_expired_once(
    cstore: DynamoDBStore, junk: list[str], others: list[str]
) -> None:
    """Spec 12 (defect 14): cookies of our name that do not verify are expired on the response,
    with the same path and flags, whatever else the header holds."""
    parts = [*others, *(f"id={value}" for value in junk)]
    header = "; ".join(parts).encode("latin-1")
    counting = CountingStore(cstore)
    seen: list[dict[str, Any]] = []
    app = SessionMiddleware(reader_app(seen), store=counting, secret_keys=SECRET)
    status, cookies, body = await request(app, [(b"cookie", header)])
    assert (status, body) == (200, b"app")
    assert seen == [{}]
    assert counting.calls["load"] == 0
    assert cookies == [EXPIRED_COOKIE]


@settings(PROFILE)
@given(
    before=st.lists(st.one_of(our_junk, other_cookie), max_size=6),
    after=st.lists(st.one_of(our_junk, other_cookie), max_size=6),
    split=st.booleans(),
)
async def test_a_live_cookie_among_junk_is_found(
    fstore: DynamoDBStore, before: list[str], after: list[str], split: bool
) -> None:
    """Spec 2: of several cookies with our name, the first one whose signature verifies is
    used: exactly one read, the live session's data, no 500."""
    seen: list[dict[str, Any]] = []
    creator = SessionMiddleware(reader_app(seen, write=True), store=fstore, secret_keys=SECRET)
    _, cookies, _ = await request(creator, [])
    live = cookies[0].split(";", 1)[0][3:]
    mine = f"id={live}"
    if split:
        raw = [
            ("; ".join(before)).encode("latin-1"),
            mine.encode(),
            "; ".join(after).encode("latin-1"),
        ]
    else:
        raw = ["; ".join([*before, mine, *after]).encode("latin-1")]
    counting = CountingStore(fstore)
    seen.clear()
    app = SessionMiddleware(reader_app(seen), store=counting, secret_keys=SECRET)
    status, _, body = await request(app, [(b"cookie", h) for h in raw if h])
    assert (status, body) == (200, b"app")
    assert seen == [{"fuzz": 1}]
    assert counting.calls["load"] == 1


@settings(PROFILE)
@given(headers=cookie_headers())
@example(headers=[LATIN1_SIGNATURE])
async def test_hostile_cookie_headers_on_a_websocket(
    cstore: DynamoDBStore, headers: list[bytes]
) -> None:
    seen: list[dict[str, Any]] = []
    app = SessionMiddleware(reader_app(seen), store=cstore, secret_keys=SECRET)
    try:
        sent = await asgi_websocket(app, [(b"cookie", h) for h in headers])
    except Exception as exc:
        raise AssertionError(f"the middleware raised {exc!r} for headers {headers!r}") from exc
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"], sent
    assert seen == [{}]


# -- stored items -------------------------------------------------------------------------------

numbers = st.sampled_from(
    [
        "1.5",
        "-1",
        "0",
        "1e30",
        "99999999999999999999999999999999999999",
        "300000000000",  # beyond the year 9999
        "253402300800",  # 10000-01-01
        "1E+2",
        "0.000001",
        "-300000000000",
    ]
)


def future(offset: float) -> str:
    return str(int(time.time() + offset))


payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda b: b"\x01" + b, st.binary(max_size=64)),
    st.builds(lambda b: b"\x02" + b, st.binary(max_size=64)),
    st.builds(
        lambda v: b"\x01" + msgspec.msgpack.encode(v),
        st.one_of(st.integers(), st.lists(st.integers()), st.text(), st.none()),
    ),
    st.builds(
        lambda v: b"\x02" + zlib.compress(msgspec.msgpack.encode(v)),
        st.one_of(st.integers(), st.dictionaries(st.integers(), st.integers(), max_size=3)),
    ),
    st.builds(lambda b: b"\x02" + zlib.compress(b), st.binary(max_size=64)),
)
policies = st.sampled_from(
    [
        "inactivity:inf",
        "inactivity:nan",
        "inactivity:-1",
        "inactivity:0",
        "inactivity:1e20",
        "inactivity:",
        "at:1e20",
        "at:inf",
        "at:nan",
        "at:-1e20",
        "at:",
        "at:300000000000",
        "session:x",
        "nonsense",
        "",
    ]
)


@st.composite
def broken_items(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A well-formed item's attributes with one of them (or a payload byte) broken, and what
    was broken ("none": the item is well-formed and must load)."""
    good = b"\x01" + msgspec.msgpack.encode({"user": "u"})
    attrs: dict[str, Any] = {
        "expire_at": {"N": future(3600)},
        "data": {"B": good},
        "version": {"N": "3"},
        "created_at": {"N": future(-60)},
    }
    if draw(st.booleans()):
        attrs["expiry_policy"] = {"S": f"inactivity:{3600:g}"}
    what = draw(
        st.sampled_from(
            ["none", "expire_at", "data", "payload_byte", "version", "created_at", "policy", "type"]
        )
    )
    if what == "expire_at":
        attrs["expire_at"] = draw(
            st.one_of(
                st.builds(lambda n: {"N": n}, numbers),
                st.builds(lambda n: {"N": future(3600) + n}, st.sampled_from([".5", ".999"])),
                st.builds(lambda s: {"S": s}, st.text(max_size=20)),
                st.just({"B": b"1"}),
                st.just(None),
            )
        )
    elif what == "data":
        attrs["data"] = draw(
            st.one_of(
                st.builds(lambda b: {"B": b}, payloads),
                st.builds(lambda s: {"S": s}, st.text(max_size=20)),
                st.just({"N": "1"}),
                st.just(None),
            )
        )
    elif what == "payload_byte":
        at = draw(st.integers(0, len(good) - 1))
        value = draw(st.integers(0, 255).filter(lambda v, at=at: v != good[at]))
        cut = draw(st.integers(1, len(good)))
        data = bytearray(good)
        data[at] = value
        attrs["data"] = {"B": bytes(data[:cut])}
    elif what in ("version", "created_at"):
        # version 0 has its own test below (test_a_stored_version_below_one_is_never_a_503)
        some = numbers.filter(lambda n: n != "0") if what == "version" else numbers
        attrs[what] = draw(
            st.one_of(
                st.builds(lambda n: {"N": n}, some),
                st.builds(lambda s: {"S": s}, st.text(max_size=20)),
                st.just(None),
            )
        )
    elif what == "policy":
        attrs["expiry_policy"] = draw(
            st.one_of(st.builds(lambda s: {"S": s}, policies), st.just({"N": "1"}))
        )
    elif what == "type":
        name = draw(st.sampled_from(["expire_at", "version", "created_at", "expiry_policy"]))
        attrs[name] = draw(st.sampled_from([{"BOOL": True}, {"NULL": True}, {"L": []}, {"M": {}}]))
    return {k: v for k, v in attrs.items() if v is not None}, what


def _item(**changes: Any) -> tuple[dict[str, Any], str]:
    """A well-formed item with `changes` (defect 7's hand-written cases)."""
    attrs: dict[str, Any] = {
        "expire_at": {"N": future(3600)},
        "data": {"B": b"\x01" + msgspec.msgpack.encode({"user": "u"})},
        "version": {"N": "3"},
        "created_at": {"N": future(-60)},
    }
    attrs.update(changes)
    return attrs, "example"


@settings(PROFILE)
@given(case=broken_items(), write=st.booleans())
@example(case=_item(created_at={"N": "1.5"}), write=True)
@example(case=_item(created_at={"S": "yesterday"}), write=False)
@example(case=_item(created_at={"N": "300000000000"}), write=False)
@example(case=_item(expire_at={"N": "300000000000"}), write=False)
@example(case=_item(expiry_policy={"S": "inactivity:inf"}), write=False)
@example(case=_item(expiry_policy={"S": "at:1e20"}), write=False)
@example(case=_item(expiry_policy={"S": "at:nan"}), write=True)
@example(case=_item(version={"N": "-1"}), write=True)
async def test_malformed_stored_items_are_no_session(
    fstore: DynamoDBStore, raw: Any, case: tuple[dict[str, Any], str], write: bool
) -> None:
    """Defect 7: every attribute is parsed inside the guard; a bad item is no session (the
    app still answers, 200), never a 500 or an exception."""
    attrs, what = case
    session_id = secrets.token_urlsafe(32)
    try:
        await raw.put_item(TableName=fstore.props.table_name, Item={**key_of(session_id), **attrs})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":
            reject()  # the server would not store such an item
        raise
    seen: list[dict[str, Any]] = []
    app = SessionMiddleware(reader_app(seen, write=write), store=fstore, secret_keys=SECRET)
    status, _, body = await request(app, [(b"cookie", f"id={signed(session_id)}".encode())])
    assert (status, body) == (200, b"app"), (what, attrs)
    assert len(seen) == 1
    if what != "payload_byte":  # a changed byte may still decode, as other (unsigned) data
        assert seen[0] in ({}, {"user": "u"}), seen
    if what == "none":
        assert seen == [{"user": "u"}]  # the well-formed item loads: the test can tell


@pytest.mark.parametrize("version", ["0", "-1", "1.5"])
async def test_a_stored_version_below_one_is_never_a_503(
    fstore: DynamoDBStore, raw: Any, version: str
) -> None:
    """Found after the fixes (a case of defect 7): an item whose `version` is 0 loads, and then
    every save of it answers 503 ("gave up after 8 conflicting writes"), until it expires. The
    write must succeed or the item be no session: the app's 200 either way. (Kept out of the
    hypothesis test, whose generated cases would not run past a failing explicit one.)"""
    attrs, _ = _item(version={"N": version})
    session_id = secrets.token_urlsafe(32)
    await raw.put_item(TableName=fstore.props.table_name, Item={**key_of(session_id), **attrs})
    seen: list[dict[str, Any]] = []
    app = SessionMiddleware(reader_app(seen, write=True), store=fstore, secret_keys=SECRET)
    status, _, body = await request(app, [(b"cookie", f"id={signed(session_id)}".encode())])
    assert (status, body) == (200, b"app"), (status, body)
