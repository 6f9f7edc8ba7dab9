"""Session ids: 256 random bits, and the hash that stands for them at rest and in logs."""

from __future__ import annotations

import base64
import hashlib
import secrets


def new_id() -> str:
    """A fresh session id: 32 random bytes, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def new_token() -> str:
    """A write token: 96 random bits naming one write, so a retry can recognise it."""
    return secrets.token_urlsafe(12)


def hash_id(session_id: str) -> str:
    """sha256 of the id, base64url without padding: what the table stores when hashing is on."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def log_id(session_id: str | None) -> str:
    """A short, non-reversible tag for a session id in log lines."""
    return "-" if session_id is None else hash_id(session_id)[:12]
