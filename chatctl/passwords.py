"""Password hashing for accounts: scrypt (memory-hard, in the standard library), a random
salt per account, and a constant-time comparison.

A stored hash names its own parameters (`scrypt$N$r$p$salt$hash`, base64 without padding),
so the cost can be raised later without invalidating existing accounts. The default,
N=2**14, r=8, p=1 (16 MiB, ~40 ms on one core of the development machine), is the scrypt
paper's interactive-login setting. The server runs it off the event loop (server/verifier.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

SCHEME = "scrypt"
N, R, P = 1 << 14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # characters: bounds the KDF's input, which is hashed in full
# The most memory one verification may take (scrypt needs 128 * N * r bytes).
MAX_MEMORY = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _kdf(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=MAX_MEMORY + 1024 * 1024,
        dklen=KEY_BYTES,
    )


def password_problem(password: str) -> str | None:
    """Why `password` may not be an account's password, or None."""
    if len(password) < PASSWORD_MIN:
        return f"a password has at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"a password has at most {PASSWORD_MAX} characters"
    return None


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """The string to store for `password`, with a fresh salt."""
    salt = os.urandom(SALT_BYTES)
    key = _kdf(password, salt, n, r, p)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (from hash_password). A malformed or unknown
    `stored`, or parameters that would take more than MAX_MEMORY, give False."""
    try:
        scheme, n_s, r_s, p_s, salt_s, key_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, key = _unb64(salt_s), _unb64(key_s)
    except ValueError:
        return False
    if scheme != SCHEME or not (1 < n <= 1 << 20 and 0 < r <= 32 and 0 < p <= 16):
        return False
    if 128 * n * r * p > MAX_MEMORY or len(password) > PASSWORD_MAX:
        return False
    return hmac.compare_digest(_kdf(password, salt, n, r, p), key)


@functools.cache
def dummy_hash() -> str:
    """Checked against when an account does not exist, so that an unknown name costs the
    same time as a wrong password and a login's timing does not say which names exist."""
    return hash_password("not a password of anyone's")
