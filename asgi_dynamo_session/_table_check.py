"""First run: is the session table there? A missing table is said in words that tell the fix.

Without this a missing table (or one in another region) answers every request with
``503 Session store unavailable``, which looks like an outage. The store's `open()` describes
the table (until it has been found once) and logs the table, region, endpoint and how to create
it; `SessionMiddleware` then fails the ASGI lifespan startup with those words. `open()` itself
does not raise, so ``async with store: await store.create_table()`` still works. At request time
a ``ResourceNotFoundException`` is logged in the same words, at most once a minute.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
    """One store's table check: until the table is found, each open describes it; a missing
    table is remembered (`missing`) for the lifespan startup and explained in the log."""

    def __init__(self) -> None:
        self.done = False  # the table was found, or create_table() made it
        self.missing: str | None = None  # why the table was not found, while it is not
        self._explained = float("-inf")

    def found(self) -> None:
        self.done, self.missing = True, None

    async def run(self, client: Any, table: str) -> None:
        """DescribeTable unless the table was found before. Failures other than a missing
        table (network, no DescribeTable permission) only log a warning."""
        if self.done or client is None:
            return
        try:
            await client.describe_table(TableName=table)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code != _MISSING:
                logger.warning("could not check the session table %r: %s", table, code)
                return
            self.missing = missing_table_message(table, *_where(client))
            self._explained = time.monotonic()
            logger.error("%s", self.missing)
        except (BotoCoreError, OSError, TimeoutError) as exc:
            logger.warning("could not check the session table %r: %s", table, exc)
        else:
            self.found()

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
