"""Signed session-id cookies: HMAC-SHA256 with key rotation, and Set-Cookie headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Literal

SameSite = Literal["lax", "strict", "none"]

_MIN_KEY_BYTES = 32
#: A cookie value we could have made: a 43-character id, a dot, a 43-character signature.
_VALUE = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
#: What a path or domain attribute must not hold: ';' would start another attribute, control
#: characters (CR, LF, ...) would split the header, and non-ASCII has no one encoding in it.
_UNSAFE = re.compile(r"[^\x20-\x3a\x3c-\x7e]")  # printable ASCII but ';'


def _key_bytes(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < _MIN_KEY_BYTES:
        raise ValueError(
            f"each secret key needs at least {_MIN_KEY_BYTES} bytes, got {len(raw)}; make one "
            'with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return raw


class Signer:
    """Signs ids with the first key and verifies with any key, in constant time."""

    def __init__(self, secret_keys: str | bytes | Sequence[str | bytes]) -> None:
        keys = [secret_keys] if isinstance(secret_keys, (str, bytes)) else list(secret_keys)
        if not keys:
            raise ValueError("secret_keys needs at least one key")
        self._macs = [hmac.new(_key_bytes(k), digestmod=hashlib.sha256) for k in keys]

    def _signature(self, index: int, session_id: bytes) -> bytes:
        mac = self._macs[index].copy()
        mac.update(session_id)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")

    def sign(self, session_id: str) -> str:
        """The cookie value for an id: ``id.signature``."""
        return f"{session_id}.{self._signature(0, session_id.encode()).decode()}"

    def unsign(self, value: str) -> tuple[str, int] | None:
        """The id in a cookie value and the index of the key that signed it, or None.

        Only values of our own alphabet and shape get as far as the (constant-time, bytes)
        comparison, so no client-chosen byte can make it raise."""
        if not _VALUE.fullmatch(value):
            return None
        raw = value.encode("ascii")
        session_id, signature = raw[:43], raw[44:]
        for index in range(len(self._macs)):
            if hmac.compare_digest(self._signature(index, session_id), signature):
                return value[:43], index
        return None

    def first_valid(self, values: Iterable[str]) -> tuple[str, int] | None:
        """The first cookie value whose signature verifies (browsers may send duplicates)."""
        for value in values:
            found = self.unsign(value)
            if found is not None:
                return found
        return None


def cookie_values(headers: Iterable[tuple[bytes, bytes]], name: str) -> list[str]:
    """Every value of cookie `name` in the request's Cookie headers, in order."""
    values: list[str] = []
    prefix = name + "="
    for header, raw in headers:
        if header != b"cookie":
            continue
        text = raw.decode("latin-1")
        if prefix not in text:
            continue
        for part in text.split(";"):
            part = part.strip()
            if part.startswith(prefix):
                values.append(part[len(prefix) :])
    return values


class CookieFormat:
    """Builds the Set-Cookie header value with the configured attributes."""

    def __init__(
        self,
        name: str,
        *,
        path: str,
        domain: str | None,
        secure: bool,
        http_only: bool,
        same_site: SameSite | None,
        partitioned: bool,
    ) -> None:
        if not name or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
            raise ValueError(f"invalid cookie name {name!r}")
        for label, text in (("path", path), ("domain", domain)):
            if text is not None and (not text or _UNSAFE.search(text)):
                raise ValueError(
                    f"invalid cookie {label} {text!r}: empty, or holds ';' or a control"
                )
        if not path.startswith("/"):
            raise ValueError(f"cookie path must start with '/', got {path!r}")
        lowered = name.lower()  # RFC 6265bis matches the prefixes case-insensitively
        if lowered.startswith("__host-") and (not secure or path != "/" or domain is not None):
            raise ValueError(
                f'a "__Host-" cookie ({name}) needs secure=True, path="/" and no domain'
            )
        if lowered.startswith("__secure-") and not secure:
            raise ValueError(f'a "__Secure-" cookie ({name}) needs secure=True')
        if same_site is not None and same_site.lower() not in ("lax", "strict", "none"):
            raise ValueError(
                f"same_site must be 'lax', 'strict', 'none' or None, not {same_site!r}"
            )
        if same_site is not None and same_site.lower() == "none" and not secure:
            raise ValueError('same_site="none" needs secure=True')
        if partitioned and not secure:
            raise ValueError("partitioned cookies need secure=True")
        self.name = name
        attrs = f"; Path={path}"
        if domain is not None:
            attrs += f"; Domain={domain}"
        self._tail = ""
        if http_only:
            self._tail += "; HttpOnly"
        if secure:
            self._tail += "; Secure"
        if same_site is not None:
            self._tail += f"; SameSite={same_site.capitalize()}"
        if partitioned:
            self._tail += "; Partitioned"
        self._attrs = attrs

    def set(self, value: str, expires: datetime | None, now: float) -> bytes:
        """A Set-Cookie value; `expires` None makes a browser-session cookie."""
        lifetime = ""
        if expires is not None:
            # in datetime arithmetic (exact microseconds), not float seconds, so that a 14-day
            # cookie says 1209600, not 1209599.99...
            left = expires - datetime.fromtimestamp(now, timezone.utc)
            max_age = max(0, int(left.total_seconds()))
            stamp = format_datetime(expires.astimezone(timezone.utc), usegmt=True)
            lifetime = f"; Max-Age={max_age}; Expires={stamp}"
        return f"{self.name}={value}{self._attrs}{lifetime}{self._tail}".encode("latin-1")

    def expire(self) -> bytes:
        """A Set-Cookie value that removes the cookie, with the same path, domain and flags."""
        return f"{self.name}={self._attrs}; Max-Age=0; Expires={_EPOCH}{self._tail}".encode()
