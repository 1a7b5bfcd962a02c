"""Standard Webhooks signatures (https://www.standardwebhooks.com, version 1).

A secret reads ``whsec_`` + base64 of 24-64 random bytes; the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``; the ``webhook-signature`` header holds one or more
space-separated ``v1,<base64 HMAC-SHA256>`` (several while a rotated secret still signs)."""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(signature(secret, message_id, timestamp, body) for secret in secrets_)
