"""Deterministic bcrypt htpasswd lines for the distribution registry's htpasswd auth.

The registry accepts only bcrypt entries. bcrypt salts are normally random, which would make the
htpasswd file (and therefore the Pulumi resources that carry it) change on every run. Here the
16-byte salt is ``HMAC-SHA256(secret_key_material, b"htpasswd:" + username)[:16]``: stable for a
given secret and user, different per user, and unpredictable to anyone without the secret (the
program passes the CA key, so the salt is as secret as the PKI). The password itself is still
protected by bcrypt's cost as usual.

Cost (rounds) 10 — the Go ``bcrypt.DefaultCost``: the registry's htpasswd access controller runs
``bcrypt.CompareHashAndPassword`` on *every* authenticated HTTP request (no session cache), and a
single ``pull`` makes several requests per layer, so each cost step doubles CPU per request on
the registry host. 10 costs roughly 50-100 ms of one core per request; 12+ makes parallel pulls
from many nodes CPU-bound on master0 during the very recovery this program exists for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import bcrypt

__all__ = ["htpasswd_line", "verify", "validate_htpasswd", "bcrypt_salt"]

_STD_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT_B64 = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_TO_BCRYPT = bytes.maketrans(_STD_B64, _BCRYPT_B64)
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_MAX_PASSWORD_BYTES = 72  # bcrypt ignores (bcrypt>=5: rejects) anything past 72 bytes


def _check_username(username: str) -> None:
    if not isinstance(username, str) or not username:
        raise ValueError("htpasswd username must be a non-empty string")
    if ":" in username or any(c in username for c in "\r\n\0") or username != username.strip():
        raise ValueError(
            f"htpasswd username {username!r} must not contain ':', line breaks, NUL "
            "or surrounding whitespace"
        )


def _password_bytes(password: str) -> bytes:
    if not isinstance(password, str) or not password:
        raise ValueError("htpasswd password must be a non-empty string")
    raw = password.encode("utf-8")
    if b"\0" in raw:
        raise ValueError("htpasswd password must not contain NUL")
    if len(raw) > _MAX_PASSWORD_BYTES:
        raise ValueError(
            f"htpasswd password is {len(raw)} bytes in UTF-8; bcrypt uses at most "
            f"{_MAX_PASSWORD_BYTES}"
        )
    return raw


def bcrypt_salt(secret_key_material: bytes, username: str, rounds: int = 10) -> bytes:
    """The ``$2b$<rounds>$<22 chars>`` salt for ``username``, derived from the secret."""
    if not isinstance(secret_key_material, (bytes, bytearray)) or not secret_key_material:
        raise ValueError("secret_key_material must be non-empty bytes")
    if not isinstance(rounds, int) or not 4 <= rounds <= 31:
        raise ValueError("bcrypt rounds must be an integer in 4..31")
    raw = hmac.new(
        bytes(secret_key_material), b"htpasswd:" + username.encode("utf-8"), hashlib.sha256
    ).digest()[:16]
    # 16 bytes -> 24 base64 chars ending in "=="; bcrypt's salt is the first 22 chars in its own
    # alphabet. The 22nd char carries the last 2 bits with 4 zero padding bits: canonical form.
    encoded = base64.b64encode(raw).rstrip(b"=").translate(_TO_BCRYPT)
    assert len(encoded) == 22
    return b"$2b$%02d$" % rounds + encoded


def htpasswd_line(
    username: str, password: str, secret_key_material: bytes, rounds: int = 10
) -> str:
    """``username:$2b$10$...`` (no newline). Same inputs give the same line."""
    _check_username(username)
    hashed = bcrypt.hashpw(_password_bytes(password), bcrypt_salt(secret_key_material, username, rounds))
    return f"{username}:{hashed.decode('ascii')}"


def verify(line: str, username: str, password: str) -> bool:
    """True if ``line`` (one htpasswd line, or a whole file) accepts ``username``/``password``.

    Never raises on bad input: malformed lines, non-bcrypt hashes and over-long passwords are
    simply not accepted.
    """
    if not isinstance(line, str) or not isinstance(password, str):
        return False
    raw = password.encode("utf-8")
    if len(raw) > _MAX_PASSWORD_BYTES or b"\0" in raw:
        return False
    for entry in line.splitlines():
        user, sep, hashed = entry.strip().partition(":")
        if not sep or user != username or not hashed.startswith(_BCRYPT_PREFIXES):
            continue
        try:
            if bcrypt.checkpw(raw, hashed.encode("ascii")):
                return True
        except (ValueError, UnicodeEncodeError):
            continue
    return False


def validate_htpasswd(content: str) -> list[str]:
    """Check a brought htpasswd file: every non-blank line is ``user:<bcrypt hash>``.

    Returns the usernames in file order; raises ``ValueError`` naming the first bad line
    (the registry silently ignores, i.e. never accepts, non-bcrypt entries such as ``$apr1$``).
    """
    if not isinstance(content, str):
        raise ValueError("htpasswd content must be a string")
    users: list[str] = []
    for number, entry in enumerate(content.splitlines(), start=1):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, hashed = entry.partition(":")
        if not sep or not user:
            raise ValueError(f"htpasswd line {number}: expected 'user:hash'")
        if not hashed.startswith(_BCRYPT_PREFIXES) or len(hashed) != 60:
            raise ValueError(
                f"htpasswd line {number} (user {user!r}): not a bcrypt hash; the registry "
                "accepts only bcrypt ($2a$/$2b$/$2y$), e.g. `htpasswd -B`"
            )
        users.append(user)
    if not users:
        raise ValueError("htpasswd content has no entries")
    return users
