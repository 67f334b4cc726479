"""Where the password for `--account` comes from: the user, never the command line.

`CHATCTL_PASSWORD` when it is set (scripts, services); else, when stdin and stderr are both
terminals, a prompt that does not echo; else nothing can be asked (in a pipe, stdin carries
the messages), and the error says to set the variable. The client library only takes the
password it is given: asking for it is the UI's business.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from chatctl.errors import ChatctlError, ExitCode

PASSWORD_VAR = "CHATCTL_PASSWORD"


def account_password(
    account: str,
    host: str,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """The password to log in to `account` on `host` with. Raises ChatctlError (usage) when
    there is no way to get one, and KeyboardInterrupt when the user gives up at the prompt."""
    env = os.environ if environ is None else environ
    password = env.get(PASSWORD_VAR, "")
    if password:
        return password
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    if not (_isatty(stdin) and _isatty(stderr)):
        raise ChatctlError(
            f"--account {account} needs a password: set {PASSWORD_VAR} "
            "(it cannot be asked for without a terminal)",
            ExitCode.USAGE,
        )
    try:
        password = prompt(f"Password for {account}@{host}: ")
    except EOFError:
        raise ChatctlError("no password given", ExitCode.USAGE) from None
    if not password:
        raise ChatctlError("no password given", ExitCode.USAGE)
    return password


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


__all__ = ["PASSWORD_VAR", "account_password"]
