"""A TLS certificate's fingerprint as both sides write it: the server's banner, the client's
messages and its known_servers file. Sans-IO.

    SHA256:AB:CD:...:EF     SHA-256 of the certificate (DER), 32 colon-separated hex pairs,
                            as `openssl x509 -noout -fingerprint -sha256` prints it

What people type (`--tls-fingerprint`) is read case-insensitively, with or without the
colons and with or without the `SHA256:` prefix.
"""

from __future__ import annotations

import hashlib
import string

PREFIX = "SHA256:"
_HEX = frozenset(string.hexdigits)


def format_fingerprint(digest: bytes) -> str:
    """`SHA256:` and `digest` (32 bytes) in colon-separated upper-case hex pairs."""
    return PREFIX + digest.hex(":").upper()


def certificate_fingerprint(der: bytes) -> str:
    """The fingerprint of a certificate in DER form."""
    return format_fingerprint(hashlib.sha256(der).digest())


def parse_fingerprint(text: str) -> str:
    """The fingerprint `text` writes, in the form above. Raises ValueError."""
    given = text.strip()
    digits = given[len(PREFIX) :] if given[: len(PREFIX)].upper() == PREFIX else given
    digits = digits.replace(":", "")
    if len(digits) != 64 or not _HEX.issuperset(digits):
        raise ValueError(
            f"{text!r} is not a SHA-256 fingerprint (SHA256: and 32 hex pairs, as the "
            "server's banner shows it)"
        )
    return format_fingerprint(bytes.fromhex(digits))


__all__ = ["PREFIX", "certificate_fingerprint", "format_fingerprint", "parse_fingerprint"]
