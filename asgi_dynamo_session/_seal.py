"""Encryption at rest: AES-256-GCM sealing of stored payloads, bound to the item they belong to.

A sealed payload is ``format byte | key id (4) | nonce (12) | ciphertext | tag (16)``. The format
byte, the key id and the item's key are the associated data, so a payload copied onto another
item, or relabelled with another format or key, does not open. The first key seals; every key
opens what it sealed (rotation). Needs the ``encryption`` extra (``cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

KEY_BYTES = 32
KEY_ID_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16
#: Bytes a sealed payload adds to the unsealed one (the format byte is there either way).
OVERHEAD = KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES

_HINT = (
    "make one with: python -c "
    '"import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
)

EncryptionKeys = str | bytes | Sequence[str | bytes]


class Unsealable(ValueError):
    """A stored payload that does not open: wrong key, tampered, truncated or moved."""


def parse_key(key: str | bytes) -> bytes:
    """A key as 32 raw bytes: `bytes` as they are; a `str` as the base64 (standard or URL-safe)
    of 32 bytes, else as its UTF-8 bytes, which must then be exactly 32."""
    if isinstance(key, str):
        text = key.strip()
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == KEY_BYTES:
            return raw
        raw = key.encode()
        if len(raw) != KEY_BYTES:
            raise ValueError(
                "an encryption key given as str must be the base64 of 32 bytes (or exactly 32 "
                f"bytes of UTF-8), got {len(raw)} bytes; {_HINT}"
            )
        return raw
    if isinstance(key, bytes | bytearray):
        if len(key) != KEY_BYTES:
            raise ValueError(f"an encryption key must be exactly 32 bytes, got {len(key)}; {_HINT}")
        return bytes(key)
    raise TypeError(f"an encryption key must be str or bytes, not {type(key).__name__}")


def key_id(key: bytes) -> bytes:
    """The 4 bytes naming a key in the payloads it seals (reveals nothing about the key)."""
    return hmac.new(key, b"asgi-dynamo-session key id", hashlib.sha256).digest()[:KEY_ID_BYTES]


class Sealer:
    """Seals with the first key, opens with any of them."""

    def __init__(self, keys: EncryptionKeys) -> None:
        given = [keys] if isinstance(keys, str | bytes | bytearray) else list(keys)
        if not given:
            raise ValueError(f"encryption_keys must hold at least one key (or be None); {_HINT}")
        raw = [parse_key(k) for k in given]
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise ImportError(
                "encryption_keys needs the 'encryption' extra: "
                "pip install 'asgi-dynamo-session[encryption]'"
            ) from exc
        self._ciphers: dict[bytes, Any] = {}
        for key in raw:
            kid = key_id(key)
            if kid in self._ciphers:
                raise ValueError(f"encryption_keys holds one key twice; for a new one, {_HINT}")
            self._ciphers[kid] = AESGCM(key)
        self._sealing_id = key_id(raw[0])
        self._sealing = self._ciphers[self._sealing_id]

    def seal(self, fmt: int, body: bytes, context: bytes) -> bytes:
        """The sealed payload of `body` under format byte `fmt`, bound to `context` (item key)."""
        header = bytes((fmt,)) + self._sealing_id
        nonce = os.urandom(NONCE_BYTES)
        sealed: bytes = self._sealing.encrypt(nonce, body, header + context)
        return header + nonce + sealed

    def open(self, payload: bytes, context: bytes) -> bytes:
        """The body inside a sealed payload; `Unsealable` when it does not open here."""
        if len(payload) < 1 + OVERHEAD:
            raise Unsealable(f"sealed payload truncated ({len(payload)} bytes)")
        header = bytes(payload[: 1 + KEY_ID_BYTES])
        cipher = self._ciphers.get(header[1:])
        if cipher is None:
            raise Unsealable(f"sealed with a key that is not configured (id {header[1:].hex()})")
        start = 1 + KEY_ID_BYTES
        nonce = bytes(payload[start : start + NONCE_BYTES])
        from cryptography.exceptions import InvalidTag

        try:
            sealed = bytes(payload[start + NONCE_BYTES :])
            body: bytes = cipher.decrypt(nonce, sealed, header + context)
        except InvalidTag:
            raise Unsealable(
                "sealed payload does not open (tampered, or moved from another item)"
            ) from None
        return body
