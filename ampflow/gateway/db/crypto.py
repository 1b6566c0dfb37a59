"""Secrets at rest: API keys (HMAC-SHA256 with a pepper) and station passwords (scrypt).

An API key reads ``amp_<id>_<secret>``. The id (12 characters) finds the row; the secret
(43 characters, 256 bits) is checked against ``HMAC-SHA256(pepper, secret)`` in constant time. A
fast keyed hash is right for random 256-bit secrets; station passwords (OCPP security profiles 1
and 2, 16 to 40 characters chosen by people or installers) get salted scrypt instead.

Examples
--------
>>> key = new_api_key()
>>> key_id, secret = split_api_key(key.token)
>>> key_id == key.id and check_api_secret(secret, key.secret_hash(b"pepper"), b"pepper")
True
>>> stored = hash_password("correct horse battery")
>>> verify_password("correct horse battery", stored), verify_password("wrong", stored)
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "NewApiKey",
    "check_api_secret",
    "hash_api_secret",
    "hash_password",
    "new_api_key",
    "split_api_key",
    "verify_password",
]

_PREFIX = "amp"
# scrypt cost: n=2**14, r=8, p=1 (16 MiB, ~50 ms), the interactive-login setting.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made key: ``token`` is shown once and never stored."""

    id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{_PREFIX}_{self.id}_{self.secret}"

    def secret_hash(self, pepper: bytes) -> str:
        return hash_api_secret(self.secret, pepper)


def new_api_key() -> NewApiKey:
    """A random key id and secret."""
    key_id = secrets.token_hex(6)
    return NewApiKey(key_id, secrets.token_urlsafe(32))


def split_api_key(token: str) -> tuple[str, str]:
    """``(id, secret)`` of a token; raises ``ValueError`` if it is not shaped like a key."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 12 or not parts[2]:
        raise ValueError("API key: expected 'amp_<12 characters>_<secret>'")
    return parts[1], parts[2]


def hash_api_secret(secret: str, pepper: bytes) -> str:
    """Hex HMAC-SHA256 of the secret under the server's pepper."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def check_api_secret(secret: str, stored_hash: str, pepper: bytes) -> bool:
    """Whether ``secret`` matches ``stored_hash``, in constant time."""
    return hmac.compare_digest(hash_api_secret(secret, pepper), stored_hash)


def hash_password(password: str) -> str:
    """A salted scrypt hash, ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)
