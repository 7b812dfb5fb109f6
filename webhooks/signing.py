"""Signing secrets and the `Webhook-Signature` header (the scheme Stripe uses).

`Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<raw body>">`, the whole secret
string (with its `whsec_` prefix) as the key. While a rotated secret is still valid there is one `v1=`
per secret, newest first, so a receiver holding either one verifies. The timestamp is signed too, so
a receiver that refuses old timestamps (the README's snippet: 5 minutes) cannot be sent a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
HEADER = "Webhook-Signature"


def secret_generate() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(*, secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={signature(secret=s, timestamp=timestamp, body=body)}" for s in secrets)])
