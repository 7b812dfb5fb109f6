"""Secrets at rest: Fernet through MultiFernet over FIELD_ENCRYPTION_KEYS.

The first key encrypts; every key decrypts, so keys can be rotated without downtime:
prepend a new key, run `manage.py rotate_encryption_keys`, then drop the old key.
The key is never derived from SECRET_KEY or the database password.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except ValueError as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS: each key must be 32 url-safe base64-encoded bytes") from exc


def _fernet() -> MultiFernet:
    return _multifernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt_secret(raw: str) -> str:
    return _fernet().encrypt(raw.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from exc


def rotate_secret(ciphertext: str) -> str:
    """Re-encrypt under the first key (MultiFernet.rotate keeps the original timestamp)."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from exc


class EncryptedSecretsMixin:
    """Model mixin: `ENCRYPTED_FIELDS` names TextFields holding Fernet ciphertext ("" = no secret).

    Secrets go through explicit methods (`_set_secret`/`_get_secret`); `__str__` never shows them.
    """

    ENCRYPTED_FIELDS: tuple[str, ...] = ()

    def _set_secret(self, field: str, raw: str | None) -> None:
        setattr(self, field, encrypt_secret(raw) if raw else "")

    def _get_secret(self, field: str) -> str | None:
        value = getattr(self, field)
        return decrypt_secret(value) if value else None

    def rotate_secrets(self) -> list[str]:
        """Re-encrypt every secret of this row under the first key; returns the changed field names."""
        changed = []
        for field in self.ENCRYPTED_FIELDS:
            value = getattr(self, field)
            if value:
                setattr(self, field, rotate_secret(value))
                changed.append(field)
        return changed
