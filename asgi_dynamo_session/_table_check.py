"""First run: is the session table there? A missing table is said in words that tell the fix.

Without this a missing table (or one in another region) answers every request with
``503 Session store unavailable``, which looks like an outage. The store's first `open()`
describes the table once and fails with the table, region, endpoint and how to create it; at
request time a ``ResourceNotFoundException`` is logged in the same words, at most once a minute.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .errors import StoreError

logger = logging.getLogger("asgi_dynamo_session")

#: How often, at most, a missing table is explained in the log at request time (seconds).
EXPLAIN_EVERY = 60.0
_MISSING = "ResourceNotFoundException"


def missing_table_message(table: str, region: str | None, endpoint: str | None) -> str:
    """What to tell someone whose session table is not where the store looks for it."""
    where = f"in region {region or '(none set)'} at {endpoint or 'the default endpoint'}"
    cli = f"asgi-dynamo-session create-table --table {table}"
    if region:
        cli = f"AWS_REGION={region} {cli}"
    if endpoint and "amazonaws.com" not in endpoint:
        cli += f" --endpoint-url {endpoint}"
    return (
        f"session table {table!r} not found {where}. Create it with "
        f"`await store.create_table()` or `{cli}`, or check the store's region_name and "
        "endpoint_url (DynamoDB tables are per region)"
    )


class TableCheck:
    """One store's table check: done at most once, then missing-table errors explained."""

    def __init__(self) -> None:
        self.done = False  # set after the first check, or when create_table() made the table
        self._explained = float("-inf")

    async def run(self, client: Any, table: str) -> None:
        """DescribeTable once; StoreError when the table is missing. Other failures (network,
        no DescribeTable permission) only log: the data-plane calls will tell for themselves."""
        if self.done or client is None:
            return
        self.done = True
        try:
            await client.describe_table(TableName=table)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == _MISSING:
                raise StoreError(missing_table_message(table, *_where(client))) from None
            logger.warning("could not check the session table %r: %s", table, code)
        except (BotoCoreError, OSError, TimeoutError) as exc:
            logger.warning("could not check the session table %r: %s", table, exc)

    def explain(
        self, exc: BaseException, client: Any, table: str, region: str | None, endpoint: str | None
    ) -> None:
        """Log how to fix `exc` if a missing table caused it, at most once a minute."""
        if _MISSING not in str(exc):
            return
        now = time.monotonic()
        if now - self._explained < EXPLAIN_EVERY:
            return
        self._explained = now
        if client is not None:
            region, endpoint = _where(client)
        logger.error("%s", missing_table_message(table, region, endpoint))


def _where(client: Any) -> tuple[str | None, str | None]:
    meta = client.meta
    return meta.region_name, meta.endpoint_url
