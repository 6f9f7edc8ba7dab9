"""The user id of a bound session, sealed with keys derived from the middleware's secret keys.

The store indexes users by sha256 of their id; the id itself rides along sealed, so that
`Session.user_id` can read it back while a table dump shows no e-mail address. Standard library
only: HMAC-SHA256 in counter mode for the keystream, and an HMAC-SHA256 tag (encrypt-then-MAC)
over the nonce, the ciphertext and the user's key. The first key seals; every key opens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

_VERSION = 0x01
_NONCE = 16
_TAG = 16
_DOMAIN = b"asgi-dynamo-session/user-id\x00"


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + purpose, hashlib.sha256).digest()


def _keystream(key: bytes, nonce: bytes, size: int) -> bytes:
    blocks = [
        hmac.new(key, nonce + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        for counter in range((size + 31) // 32)
    ]
    return b"".join(blocks)[:size]


class UserSeal:
    """Seals and opens user ids; built from the same secret keys that sign cookies."""

    def __init__(self, secret_keys: Sequence[bytes]) -> None:
        if not secret_keys:
            raise ValueError("UserSeal needs at least one key")
        self._keys = [(_derive(k, b"enc"), _derive(k, b"mac")) for k in secret_keys]

    def seal(self, user_id: str, user_key: str) -> bytes:
        """The sealed user id, bound to `user_key` (sealed bytes moved to another user's
        session do not open there)."""
        enc, mac = self._keys[0]
        nonce = secrets.token_bytes(_NONCE)
        plain = user_id.encode()
        body = bytes(a ^ b for a, b in zip(plain, _keystream(enc, nonce, len(plain)), strict=True))
        tag = self._tag(mac, nonce, body, user_key)
        return bytes((_VERSION,)) + nonce + tag + body

    def open(self, sealed: bytes, user_key: str) -> str | None:
        """The user id, or None when no key opens it (a rotated-out key, or tampering)."""
        if len(sealed) < 1 + _NONCE + _TAG or sealed[0] != _VERSION:
            return None
        nonce = sealed[1 : 1 + _NONCE]
        tag = sealed[1 + _NONCE : 1 + _NONCE + _TAG]
        body = sealed[1 + _NONCE + _TAG :]
        for enc, mac in self._keys:
            if hmac.compare_digest(self._tag(mac, nonce, body, user_key), tag):
                stream = _keystream(enc, nonce, len(body))
                try:
                    return bytes(a ^ b for a, b in zip(body, stream, strict=True)).decode()
                except UnicodeDecodeError:
                    return None
        return None

    @staticmethod
    def _tag(mac: bytes, nonce: bytes, body: bytes, user_key: str) -> bytes:
        message = nonce + len(body).to_bytes(4, "big") + body + user_key.encode()
        return hmac.new(mac, message, hashlib.sha256).digest()[:_TAG]
