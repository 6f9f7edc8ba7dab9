"""What the login/logout/counter examples share: settings from the environment and the page."""

from __future__ import annotations

import html
import logging
import os
import secrets
from urllib.parse import parse_qs

from asgi_dynamo_session import DynamoDBStore, DynamoDBStoreProps

logger = logging.getLogger("examples")

_generated_secret: str | None = None


def secret_keys() -> list[str]:
    """``SESSION_SECRET`` (comma-separated, newest first), else a random key for this process.

    A random key means sessions end when the process restarts: fine for a demo, not for a
    deployment (make one with ``python -c "import secrets; print(secrets.token_urlsafe(32))"``).
    """
    configured = os.environ.get("SESSION_SECRET", "")
    if configured:
        return [key.strip() for key in configured.split(",") if key.strip()]
    global _generated_secret
    if _generated_secret is None:
        _generated_secret = secrets.token_urlsafe(32)
        logger.warning("SESSION_SECRET not set: using a random key; sessions end on restart")
    return [_generated_secret]


def default_store() -> DynamoDBStore:
    """A store owning its client: opened at lifespan startup (or first use), closed at shutdown.

    ``DYNAMODB_ENDPOINT_URL`` points it at a local server; ``SESSION_TABLE`` names the table.
    """
    return DynamoDBStore(
        props=DynamoDBStoreProps(table_name=os.environ.get("SESSION_TABLE", "TowerSessions")),
        endpoint_url=os.environ.get("DYNAMODB_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    )


def form_value(body: bytes, name: str) -> str:
    """One field of an ``application/x-www-form-urlencoded`` body ("" when absent)."""
    values = parse_qs(body.decode("utf-8", "replace")).get(name)
    return values[0].strip() if values else ""


def page(framework: str, count: int, user: str | None) -> str:
    """The counter page, with a login form or a logout button."""
    if user:
        who = f"Logged in as <b>{html.escape(user)}</b>."
        form = '<form method="post" action="/logout"><button>Log out</button></form>'
    else:
        who = "Not logged in."
        form = (
            '<form method="post" action="/login">'
            '<input name="user" placeholder="name" required> <button>Log in</button></form>'
        )
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>{framework} sessions</title>"
        f"<h1>{framework} + DynamoDB sessions</h1>"
        f'<p id="count">Current count: {count}</p>'
        f"<p>{who}</p>{form}"
        '<p><a href="/whoami">/whoami</a> reads the session without changing it.</p>'
    )
