"""The package's own error type and the exit codes the CLI maps it to.

Every command turns a ChatctlError into one line on stderr and `exit_code`; anything else that
escapes is a bug. The codes are part of the CLI contract (README, `--help`): never renumber.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything not listed below
    USAGE = 2  # bad options or arguments (Click's own code)
    NO_RECIPIENT = 3  # `send --require-recipient`: nobody was there to receive it
    CONNECT = 4  # could not connect, or the connection was lost
    REJECTED = 5  # the server refused the request (its error code is in the message)
    TIMEOUT = 6  # no answer in time
    LOST = 7  # `bench`: messages were lost, duplicated or reordered
    NICK_TAKEN = 8  # `send --require-nick`: the server gave another nick; nothing was sent
    INTERRUPTED = 130  # Ctrl-C


class ChatctlError(Exception):
    """An error a user can act on. The message is one line, without a traceback."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConnectFailed(ChatctlError):
    exit_code = ExitCode.CONNECT


class Untrusted(ConnectFailed):
    """The server's TLS certificate is not trusted (client/trust.py): trying again cannot
    help, so a reconnecting client gives up at once."""


class Rejected(ChatctlError):
    """The server said no. `code` is the protocol ErrorCode it gave."""

    exit_code = ExitCode.REJECTED

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"{message} (server error {code})")
        self.code = code


class TimedOut(ChatctlError):
    exit_code = ExitCode.TIMEOUT


class NoRecipient(ChatctlError):
    exit_code = ExitCode.NO_RECIPIENT


class NickTaken(ChatctlError):
    exit_code = ExitCode.NICK_TAKEN
