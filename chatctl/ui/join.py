"""`chatctl join`: the interactive chat on a terminal, a line-oriented tool in a pipe.

Terminal mode (stdin and stdout both terminals, and no script options) is chatctl.tui;
anything else is chatctl.pipe. prompt_toolkit is imported only for the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from chatctl.address import Address
from chatctl.client.connection import Backoff, Client, default_nick
from chatctl.client.trust import ServerTrust
from chatctl.errors import ChatctlError, ExitCode
from chatctl.names import room_key
from chatctl.ui.render import DEFAULT_TIMESTAMP, timestamp_problem

if TYPE_CHECKING:
    import ssl


def ask_trust(addr: str, fingerprint: str) -> bool:
    """The question trust on first use asks a person (client/trust.py), on stderr and stdin."""
    print(
        f"The certificate of {addr} is not signed by a CA this computer trusts.\n"
        f"Its fingerprint is {fingerprint}\n"
        "Compare it with the one the server shows (chatctl serve prints it when it starts).",
        file=sys.stderr,
    )
    while True:
        print("Trust this server? [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            answer = sys.stdin.readline()
        except KeyboardInterrupt:
            print(file=sys.stderr)
            raise
        if not answer:  # end of input
            print(file=sys.stderr)
            return False
        word = answer.strip().lower()
        if word in ("y", "yes"):
            return True
        if word in ("", "n", "no"):
            return False


def run_join(
    *,
    addresses: Sequence[Address],
    nick: str | None,
    rooms: list[str],
    fmt: str = "text",
    count: int | None = None,
    timeout: float | None = None,
    reconnect: bool = False,
    history: int | None = None,
    connect_timeout: float = 5.0,
    tls: ssl.SSLContext | ServerTrust | None = None,
    account: str = "",
    password: str = "",
    timestamp: str = DEFAULT_TIMESTAMP,
    log_dir: Path | str | None = None,
) -> int:
    """`addresses`: the servers, tried in order (client.connection.Client); `tls` is what
    the tls:// ones trust. `account` and `password` log in (the password is the caller's to
    ask for); without --nick, an account's nick is its name. `timestamp` is a strftime
    format for the time of each line ("": none); `log_dir` keeps a log per room and day
    (on a terminal)."""
    problem = timestamp_problem(timestamp)
    if problem is not None:
        raise ChatctlError(f"--timestamp-format {timestamp!r}: {problem}", ExitCode.USAGE)
    rooms = [room_key(r) for r in rooms]
    if isinstance(tls, ServerTrust) and sys.stdin.isatty() and sys.stderr.isatty():
        tls.confirm = ask_trust  # a person is there to ask about an unknown certificate
    # --format json, --count and --timeout are for scripts: they select line mode anywhere.
    scripted = fmt != "text" or count is not None or timeout is not None
    interactive = not scripted and sys.stdin.isatty() and sys.stdout.isatty()
    if interactive:
        from chatctl.ui.tui import run_tui

        return run_tui(
            addresses=addresses,
            nick=nick,
            rooms=rooms,
            history=history,
            connect_timeout=connect_timeout,
            tls=tls,
            account=account,
            password=password,
            timestamp=timestamp,
            log_dir=log_dir,
        )

    from chatctl.ui.pipe import run_pipe

    client = Client(
        addresses,
        nick=nick or account or default_nick(),
        rooms=rooms,
        history=history,
        connect_timeout=connect_timeout,
        tls=tls,
        account=account,
        password=password,
        reconnect=reconnect,
        backoff=Backoff(cap=2.0),
    )
    return run_pipe(client, fmt=fmt, count=count, timeout=timeout, timestamp=timestamp)
