"""A lean transport straight over HTTP: aiohttp keep-alive, msgspec JSON and a cached signer.

It speaks the same six calls as `AioBotocoreTransport` with the same semantics, at a fraction of
botocore's client CPU per call. Retries follow botocore's "standard" mode: throttling and
transient errors, HTTP 5xx, connection errors and timeouts are retried with full-jitter
exponential backoff under a shared retry quota; other errors are not.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import zlib
from binascii import a2b_base64
from typing import Any, Protocol, TypeVar

import aiohttp
import msgspec

from ._netconfig import NetSettings
from ._sigv4 import SigV4Signer, amz_date
from ._transport import (
    ConditionFailed,
    Item,
    RequestTransport,
    TransactionCanceled,
    call_budget,
    cancel_reasons,
    within,
)
from .errors import StoreError

_TARGET = "DynamoDB_20120810."
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_RETRYABLE_CODES = _THROTTLING_CODES | {"RequestTimeout", "RequestTimeoutException"}
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_QUOTA = 500
_RETRY_COST = 5
_TIMEOUT_RETRY_COST = 10

_encode = msgspec.json.Encoder().encode  # bytes values go out as base64 strings
_decode = msgspec.json.Decoder().decode


#: Actions retried after a failure that came once the request may have reached DynamoDB: reads.
#: A write is retried only when it provably never left (`MayHaveArrived` not raised), unless
#: its sender can recognise its own earlier application (`retry_sent_writes`: the store's
#: writes carry a write token, or are idempotent).
RETRY_AFTER_SENDING = frozenset({"GetItem", "Scan"})


_T = TypeVar("_T", bound="FastTransport")


class MayHaveArrived(OSError):
    """The connection failed after the request was written: DynamoDB may have applied it."""


class FrozenCredentials(Protocol):
    """A snapshot of AWS credentials (botocore's ``ReadOnlyCredentials``)."""

    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def token(self) -> str | None: ...


class CredentialsProvider(Protocol):
    """Anything with aiobotocore's ``get_frozen_credentials`` (it refreshes when needed)."""

    async def get_frozen_credentials(self) -> FrozenCredentials: ...


def _decode_value(value: dict[str, Any]) -> None:
    if "B" in value:
        value["B"] = a2b_base64(value["B"])
    elif "M" in value:
        _decode_item(value["M"])
    elif "L" in value:
        for member in value["L"]:
            _decode_value(member)
    elif "BS" in value:
        value["BS"] = [a2b_base64(member) for member in value["BS"]]


def _decode_result(result: dict[str, Any]) -> dict[str, Any]:
    """Binary values to bytes in every item or key a data-plane response carries."""
    if "Item" in result:
        _decode_item(result["Item"])
    if "Attributes" in result:
        _decode_item(result["Attributes"])
    for item in result.get("Items", ()):
        _decode_item(item)
    for items in result.get("Responses", {}).values():
        for item in items:
            _decode_item(item)
    if "LastEvaluatedKey" in result:
        _decode_item(result["LastEvaluatedKey"])
    for requests in result.get("UnprocessedItems", {}).values():
        for request in requests:
            for kind, field in (("PutRequest", "Item"), ("DeleteRequest", "Key")):
                if kind in request:
                    _decode_item(request[kind][field])
    return result


def _decode_item(item: Item) -> Item:
    """Turn the base64 strings of Binary values into bytes, in place (nested M/L too)."""
    for value in item.values():
        if "S" not in value and "N" not in value:
            _decode_value(value)
    return item


class FastTransport(RequestTransport):
    """DynamoDB's data plane over one pooled aiohttp session (see the module docstring)."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region_name: str,
        credentials_provider: CredentialsProvider,
        pool_size: int = 10,
        connect_timeout: float = 60.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        backoff_base: float = 0.05,
        max_backoff: float = 20.0,
        service_name: str = "dynamodb",
        ssl_context: ssl.SSLContext | None = None,
        proxy_url: str | None = None,
        proxy_headers: dict[str, str] | None = None,
        retry_sent_writes: bool = False,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._credentials = credentials_provider
        self._signer = SigV4Signer(endpoint_url, region_name, service_name)
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # `connect` covers the wait for a pooled connection too; the whole call, retries
        # included, is bounded by `budget`.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self.budget = call_budget(max_attempts, connect_timeout, read_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._max_backoff = max_backoff
        self._quota = _QUOTA
        self._ssl = ssl_context
        self._retry_sent_writes = retry_sent_writes
        self._proxy = proxy_url
        self._proxy_headers = proxy_headers or None
        self._session: aiohttp.ClientSession | None = None
        self._second = -1
        self._date = ""

    @classmethod
    def from_aiobotocore_client(
        cls: type[_T], client: Any, net: NetSettings | None = None, **opts: Any
    ) -> _T:
        """Take credentials, region and endpoint from an aiobotocore DynamoDB client; with `net`
        (its settings, see `_netconfig`) its TLS and proxy settings too."""
        credentials = client._request_signer._credentials
        if credentials is None:
            raise StoreError("the aiobotocore client has no credentials")
        opts.setdefault("endpoint_url", client.meta.endpoint_url)
        opts.setdefault("region_name", client.meta.region_name)
        if net is not None:
            opts.setdefault("ssl_context", net.ssl_context())
            opts.setdefault("proxy_url", net.proxy_url)
            opts.setdefault("proxy_headers", net.proxy_headers)
        return cls(credentials_provider=credentials, **opts)

    @classmethod
    async def from_aiobotocore_session(
        cls: type[_T],
        session: Any,
        *,
        endpoint_url: str | None = None,
        region_name: str,
        **opts: Any,
    ) -> _T:
        """Take credentials from an ``AioSession``; the endpoint defaults to the region's."""
        credentials = await session.get_credentials()
        if credentials is None:
            raise StoreError("the aiobotocore session found no credentials")
        if endpoint_url is None:
            endpoint_url = f"https://dynamodb.{region_name}.amazonaws.com"
        return cls(
            endpoint_url=endpoint_url,
            region_name=region_name,
            credentials_provider=credentials,
            **opts,
        )

    async def close(self) -> None:
        """Close the pooled connections; the transport reopens them if used again."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=self._ssl or True),
            timeout=self._timeout,
            headers={"Accept-Encoding": "identity"},
            skip_auto_headers=("Accept",),
            raise_for_status=False,
        )
        return self._session

    async def _send(self, target: str, body: bytes) -> tuple[int, bytes, str | None]:
        try:
            creds = await self._credentials.get_frozen_credentials()
        except Exception as exc:
            raise StoreError(f"could not get AWS credentials: {type(exc).__name__}: {exc}") from exc
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, amz_date(now)
        headers = self._signer.headers(
            body, target, creds.access_key, creds.secret_key, creds.token, self._date
        )
        return await self._post(headers, body)

    async def _post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str | None]:
        """Send one signed request; (status, body, x-amz-crc32 header or None)."""
        session = self._session or self._open()
        async with session.post(
            self.endpoint_url,
            data=body,
            headers=headers,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
        ) as response:
            data = await response.read()
            return response.status, data, response.headers.get("x-amz-crc32")

    async def _request(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return await within(self.budget, action, self._attempts(action, params))

    async def _attempts(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        body = _encode(params)
        target = _TARGET + action
        attempt = 1
        while True:
            cost = _RETRY_COST
            try:
                status, data, crc = await self._send(target, body)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    cost = _TIMEOUT_RETRY_COST
                error = f"{type(exc).__name__}: {exc}"
                if (
                    isinstance(exc, MayHaveArrived)
                    and action not in RETRY_AFTER_SENDING
                    and not self._retry_sent_writes
                ):
                    raise StoreError(f"DynamoDB {action} failed (not retried): {error}") from exc
            else:
                if crc is not None and not crc_matches(crc, data):
                    error = "response CRC32 mismatch"
                elif status == 200:
                    self._quota = min(_QUOTA, self._quota + (_RETRY_COST if attempt > 1 else 1))
                    return _decode_result(parse_result(action, data))
                else:
                    code, message, document = _error(status, data)
                    if code == "ConditionalCheckFailedException":
                        old = document.get("Item")
                        raise ConditionFailed(_decode_item(old) if old else None)
                    if code == "TransactionCanceledException":
                        raise TransactionCanceled(cancel_reasons(document))
                    error = f"{code}: {message}"
                    if status not in _TRANSIENT_STATUS and code not in _RETRYABLE_CODES:
                        raise StoreError(f"DynamoDB {action} failed: {error}")
            if attempt >= self._max_attempts or cost > self._quota:
                raise StoreError(f"DynamoDB {action} failed after {attempt} attempt(s): {error}")
            self._quota -= cost
            delay = min(self._max_backoff, self._backoff_base * 2 ** (attempt - 1))
            await asyncio.sleep(random.random() * delay)
            attempt += 1


def crc_matches(header: str, data: bytes) -> bool:
    """Whether an ``x-amz-crc32`` header value is the CRC32 of `data` (False if not a number)."""
    return header.isdigit() and int(header) == zlib.crc32(data)


def parse_result(action: str, data: bytes) -> dict[str, Any]:
    """The JSON object of a 200 answer; anything else (a proxy's HTML page) is a StoreError."""
    try:
        result = _decode(data) if data else {}
    except msgspec.DecodeError:
        result = None
    if not isinstance(result, dict):
        raise StoreError(f"DynamoDB {action} failed: the 200 answer is not a JSON object")
    return result


def _error(status: int, data: bytes) -> tuple[str, str, dict[str, Any]]:
    """The error code, message and JSON document of a failed response (as botocore reads them)."""
    try:
        document = _decode(data) if data else {}
    except msgspec.DecodeError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    code = str(document.get("__type") or document.get("code") or status).rpartition("#")[2]
    message = document.get("message") or document.get("Message") or ""
    return code, str(message), document
