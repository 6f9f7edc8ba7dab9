"""Cookie options as a browser sees them (exact Set-Cookie headers), configuration errors, the
signer and the Cookie header parser. The header tests run the middleware on DynamoDBStore."""

from __future__ import annotations

import re
import secrets
from typing import Any

import msgspec
import pytest
from support import (
    OLD_SECRET,
    SECRET,
    Clock,
    app_doing,
    fetch,
    key_of,
    middleware,
    read_item,
    signature,
    signed,
)

from asgi_dynamo_session import DynamoDBStore, MemoryStore, Session, SessionMiddleware
from asgi_dynamo_session.cookies import Signer, cookie_values

EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
VALUE = r"([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})"


# --- Set-Cookie attributes --------------------------------------------------------------------

# (middleware options, cookie name, the attributes before the lifetime, the flags after it)
CASES: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "defaults": ({}, "id", "; Path=/", "; HttpOnly; Secure; SameSite=Lax"),
    "domain": (
        {"domain": "example.com"},
        "id",
        "; Path=/; Domain=example.com",
        "; HttpOnly; Secure; SameSite=Lax",
    ),
    "path": ({"path": "/api"}, "id", "; Path=/api", "; HttpOnly; Secure; SameSite=Lax"),
    "strict": ({"same_site": "strict"}, "id", "; Path=/", "; HttpOnly; Secure; SameSite=Strict"),
    "none": ({"same_site": "none"}, "id", "; Path=/", "; HttpOnly; Secure; SameSite=None"),
    "no-same-site": ({"same_site": None}, "id", "; Path=/", "; HttpOnly; Secure"),
    "partitioned": (
        {"partitioned": True},
        "id",
        "; Path=/",
        "; HttpOnly; Secure; SameSite=Lax; Partitioned",
    ),
    "insecure": ({"secure": False}, "id", "; Path=/", "; HttpOnly; SameSite=Lax"),
    "script-readable": ({"http_only": False}, "id", "; Path=/", "; Secure; SameSite=Lax"),
    "name": (
        {"cookie_name": "app_session"},
        "app_session",
        "; Path=/",
        "; HttpOnly; Secure; SameSite=Lax",
    ),
    "host-prefix": (
        {"cookie_name": "__Host-id"},
        "__Host-id",
        "; Path=/",
        "; HttpOnly; Secure; SameSite=Lax",
    ),
    "secure-prefix": (
        {"cookie_name": "__Secure-id", "domain": "example.com", "path": "/x"},
        "__Secure-id",
        "; Path=/x; Domain=example.com",
        "; HttpOnly; Secure; SameSite=Lax",
    ),
    "everything": (
        {
            "cookie_name": "sid",
            "domain": ".example.org",
            "path": "/app",
            "same_site": "none",
            "partitioned": True,
            "http_only": False,
        },
        "sid",
        "; Path=/app; Domain=.example.org",
        "; Secure; SameSite=None; Partitioned",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_set_and_expire_cookie_carry_the_configured_attributes(
    dstore: DynamoDBStore, raw: Any, clock: Clock, case: str
) -> None:
    options, name, attrs, tail = CASES[case]
    options = {**options, "clock": clock}

    def login(session: Session) -> None:
        session["user"] = "ada"

    response = await fetch(middleware(app_doing(login), dstore, **options))
    (header,) = response.headers.get_list("set-cookie")
    match = re.fullmatch(re.escape(name) + "=" + VALUE + re.escape(attrs + tail), header)
    assert match is not None, header
    sid, sig = match.groups()
    assert sig == signature(sid)
    stored = await read_item(raw, dstore.props.table_name, key_of(sid))
    assert stored is not None
    assert msgspec.msgpack.decode(stored["data"]["B"][1:]) == {"user": "ada"}

    # The cookie is read back under its configured name, and logout expires it the same way.
    response = await fetch(
        middleware(app_doing(lambda s: s.flush()), dstore, **options), f"{name}={signed(sid)}"
    )
    assert response.headers.get_list("set-cookie") == [
        f"{name}={attrs}; Max-Age=0; Expires={EPOCH}{tail}"
    ]
    assert await read_item(raw, dstore.props.table_name, key_of(sid)) is None


async def test_cookie_of_another_name_is_ignored(dstore: DynamoDBStore) -> None:
    seen: list[Any] = []
    sid = secrets.token_urlsafe(32)
    app = middleware(app_doing(lambda s: seen.append(s.id)), dstore, cookie_name="id")
    await fetch(app, f"sid={signed(sid)}; xid={signed(sid)}; ID={signed(sid)}")
    assert seen == [None]


# --- configuration errors ---------------------------------------------------------------------


def _build(**options: Any) -> SessionMiddleware:
    return middleware(app_doing(lambda s: None), MemoryStore(), **options)


@pytest.mark.parametrize(
    "options",
    [
        {"secure": False},
        {"path": "/app"},
        {"domain": "example.com"},
        {"secure": False, "path": "/app", "domain": "example.com"},
    ],
    ids=["insecure", "path", "domain", "all"],
)
def test_host_prefix_rules(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="__Host-"):
        _build(cookie_name="__Host-id", **options)


def test_host_prefix_with_the_right_options_is_accepted() -> None:
    _build(cookie_name="__Host-id", secure=True, path="/", domain=None)


def test_secure_prefix_needs_secure() -> None:
    with pytest.raises(ValueError, match="__Secure-"):
        _build(cookie_name="__Secure-id", secure=False)


@pytest.mark.parametrize("name", ["", "my id", "id;x", "id=x", 'i"d', "s\u00e9ssion"])
def test_invalid_cookie_names(name: str) -> None:
    with pytest.raises(ValueError, match="cookie name"):
        _build(cookie_name=name)


def test_same_site_none_and_partitioned_need_secure() -> None:
    with pytest.raises(ValueError, match="secure"):
        _build(same_site="none", secure=False)
    with pytest.raises(ValueError, match="secure"):
        _build(partitioned=True, secure=False)
    with pytest.raises(ValueError, match="same_site"):
        _build(same_site="sometimes")


@pytest.mark.parametrize(
    "keys",
    [
        "short",
        b"x" * 31,
        "x" * 31,
        [SECRET, "too-short"],
        ["too-short", SECRET],
        [SECRET, b""],
    ],
    ids=["str", "bytes31", "str31", "old-short", "new-short", "empty"],
)
def test_secret_keys_under_32_bytes_are_refused_with_a_hint(keys: Any) -> None:
    with pytest.raises(ValueError, match="32 bytes") as caught:
        _build(secret_keys=keys)
    assert "secrets.token_urlsafe" in str(caught.value)


def test_no_secret_keys_is_refused() -> None:
    with pytest.raises(ValueError):
        _build(secret_keys=[])


def test_thirty_two_bytes_are_enough() -> None:
    _build(secret_keys="k" * 32)
    _build(secret_keys=[b"\x00" * 32, "\u00e9" * 16])  # 32 bytes once UTF-8 encoded


async def test_bytes_and_rotated_keys_verify(dstore: DynamoDBStore, clock: Clock) -> None:
    new_key = secrets.token_bytes(32)
    seen: list[Any] = []
    app = middleware(
        app_doing(lambda s: seen.append(s.get("user"))),
        dstore,
        secret_keys=[new_key, OLD_SECRET],
        clock=clock,
    )
    login = middleware(
        app_doing(lambda s: s.update(user="ada")), dstore, secret_keys=OLD_SECRET, clock=clock
    )
    (header,) = (await fetch(login)).headers.get_list("set-cookie")
    sid = header.split("=", 1)[1].split(".", 1)[0]
    response = await fetch(app, f"id={signed(sid, OLD_SECRET)}")
    assert seen == ["ada"]
    (resigned,) = response.headers.get_list("set-cookie")
    assert resigned.startswith(f"id={signed(sid, new_key)};")


# --- the signer -------------------------------------------------------------------------------


def test_signer_signs_with_the_first_key_and_verifies_with_any() -> None:
    signer = Signer([SECRET, OLD_SECRET])
    sid = secrets.token_urlsafe(32)
    assert signer.sign(sid) == signed(sid)
    assert signer.unsign(signed(sid)) == (sid, 0)
    assert signer.unsign(signed(sid, OLD_SECRET)) == (sid, 1)
    assert signer.unsign(signed(sid, "another-key-that-is-long-enough-to-use!!")) is None


def test_signer_refuses_every_single_character_change() -> None:
    signer = Signer(SECRET)
    value = signed(secrets.token_urlsafe(32))
    for i in range(len(value)):
        for replacement in ("A", "_", "."):
            if value[i] == replacement:
                continue
            assert signer.unsign(value[:i] + replacement + value[i + 1 :]) is None, i


@pytest.mark.parametrize(
    "value",
    ["", ".", "a" * 87, "a" * 43 + "." + "a" * 42, "a" * 43 + "." + "a" * 44, "=" * 87],
)
def test_signer_refuses_malformed_values(value: str) -> None:
    assert Signer(SECRET).unsign(value) is None


def test_signer_refuses_ids_it_did_not_issue() -> None:
    # A correctly keyed signature over a value that is not a 43-character id is refused too.
    signer = Signer(SECRET)
    odd = "a" * 42 + "+"
    assert signer.unsign(f"{odd}.{signature(odd)}") is None


def test_first_valid_picks_the_first_verified_value() -> None:
    signer = Signer([SECRET, OLD_SECRET])
    a, b = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert signer.first_valid(["junk", signed(a, OLD_SECRET), signed(b)]) == (a, 1)
    assert signer.first_valid(["junk", ""]) is None


# --- the Cookie header parser -----------------------------------------------------------------


def test_cookie_values_in_order_across_headers() -> None:
    headers = [
        (b"cookie", b"a=1; id=first;id=second"),
        (b"x-cookie", b"id=not-a-cookie"),
        (b"cookie", b"sid=other; id=third ; xid=nope"),
    ]
    assert cookie_values(headers, "id") == ["first", "second", "third"]
    assert cookie_values(headers, "sid") == ["other"]
    assert cookie_values(headers, "missing") == []


def test_cookie_values_keep_equals_signs_and_empty_values() -> None:
    assert cookie_values([(b"cookie", b"id=a=b; id=")], "id") == ["a=b", ""]
