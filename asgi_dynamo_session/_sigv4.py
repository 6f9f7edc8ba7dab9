"""AWS Signature Version 4 for DynamoDB's JSON ``POST /`` requests, byte-identical to botocore's.

Everything that does not depend on the request is precomputed; the derived signing key is cached
per (secret, date, region, service).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlsplit

CONTENT_TYPE = "application/x-amz-json-1.0"
_ALGORITHM = "AWS4-HMAC-SHA256"
_SIGNED = "content-type;host;x-amz-date;x-amz-target"
_SIGNED_TOKEN = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
_sha256 = hashlib.sha256
_hmac_digest = hmac.digest


def host_from_url(url: str) -> str:
    """The ``host`` header botocore signs: lowercase, no userinfo, default port dropped."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{port}"
    return host


def amz_date(now: float | None = None) -> str:
    """The ``X-Amz-Date`` timestamp (``YYYYMMDDTHHMMSSZ``) for `now` (default: the current time)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _trim(value: str) -> str:
    return " ".join(value.split())


class SigV4Signer:
    """Signs DynamoDB JSON POSTs to one endpoint, region and service."""

    __slots__ = ("_head", "_keys", "_region", "_scope_tail", "_service", "host")

    def __init__(
        self, endpoint_url: str, region: str, service: str = "dynamodb", *, host: str | None = None
    ) -> None:
        self.host = host if host is not None else host_from_url(endpoint_url)
        path = quote(urlsplit(endpoint_url).path or "/", safe="/~")
        self._region = region
        self._service = service
        self._scope_tail = f"/{region}/{service}/aws4_request"
        self._head = f"POST\n{path}\n\ncontent-type:{CONTENT_TYPE}\nhost:{_trim(self.host)}\n"
        self._keys: dict[tuple[str, str], bytes] = {}

    def signing_key(self, secret_key: str, date: str) -> bytes:
        """The derived key for `secret_key` on `date` (``YYYYMMDD``), cached."""
        cache_key = (secret_key, date)
        key = self._keys.get(cache_key)
        if key is None:
            key = _hmac_digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
            for part in (self._region, self._service, "aws4_request"):
                key = _hmac_digest(key, part.encode(), "sha256")
            if len(self._keys) >= 16:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

    def authorization(
        self,
        body: bytes,
        target: str,
        access_key: str,
        secret_key: str,
        token: str | None,
        amz_date: str,
    ) -> str:
        """The ``Authorization`` header value for a request with these parts."""
        if token:
            canonical = (
                f"{self._head}x-amz-date:{amz_date}\nx-amz-security-token:{_trim(token)}\n"
                f"x-amz-target:{_trim(target)}\n\n{_SIGNED_TOKEN}\n{_sha256(body).hexdigest()}"
            )
            signed = _SIGNED_TOKEN
        else:
            canonical = (
                f"{self._head}x-amz-date:{amz_date}\nx-amz-target:{_trim(target)}\n\n"
                f"{_SIGNED}\n{_sha256(body).hexdigest()}"
            )
            signed = _SIGNED
        date = amz_date[:8]
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{date}{self._scope_tail}\n"
            f"{_sha256(canonical.encode()).hexdigest()}"
        )
        signature = _hmac_digest(
            self.signing_key(secret_key, date), string_to_sign.encode(), "sha256"
        ).hex()
        return (
            f"{_ALGORITHM} Credential={access_key}/{date}{self._scope_tail}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )

    def headers(
        self,
        body: bytes,
        target: str,
        access_key: str,
        secret_key: str,
        token: str | None,
        amz_date: str,
    ) -> dict[str, str]:
        """All headers of the signed request (``Content-Length`` is left to the HTTP client)."""
        headers = {
            "Host": self.host,
            "Content-Type": CONTENT_TYPE,
            "X-Amz-Date": amz_date,
            "X-Amz-Target": target,
            "Authorization": self.authorization(
                body, target, access_key, secret_key, token, amz_date
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers
