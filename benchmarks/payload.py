"""A realistic session of about 1 KB: who the user is, what they may do, what they were told."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

SECRET = "benchmark-secret-key-that-is-long-enough-0123456789"


def session_data() -> dict[str, Any]:
    """Fresh data each call (the benchmarks mutate it)."""
    return {
        "user_id": 1_048_576,
        "username": "ada.lovelace@example.com",
        "roles": ["reader", "editor", "billing-admin", "support"],
        "csrf_token": "pM3vJ8yq0fZ2bW4tQ6nR9sL1kH5gD7aX3cV8eU0iO2yT4rE6wQ",
        "authenticated_at": datetime(2025, 11, 26, 3, 51, 12, 345678, tzinfo=timezone.utc),
        "flash": [
            {"level": "success", "text": "Your profile was saved."},
            {"level": "info", "text": "Two-factor authentication is recommended for admins."},
            {"level": "warning", "text": "Your trial of the analytics add-on ends in 3 days."},
        ],
        "prefs": {
            "theme": "dark",
            "locale": "en-GB",
            "timezone": "Europe/London",
            "notifications": {"email": True, "sms": False, "digest": "weekly"},
            "dashboard": {"widgets": ["inbox", "calendar", "reports", "tasks"], "columns": 3},
        },
        "cart": [
            {"sku": "BK-1843-NOTES", "qty": 1, "price": "24.99"},
            {"sku": "PN-0042-FOUNTAIN", "qty": 2, "price": "89.50"},
        ],
        "recent_searches": ["analytical engine", "bernoulli numbers", "difference engine"],
        "last_page": "/account/settings/notifications?tab=email",
        "visits": 42,
        "client": {
            "ip": "203.0.113.42",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        },
    }


def json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """The same data with the datetime as ISO text (what a JSON cookie session can hold)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
