"""`chatctl send`: deliver one message, wait for the server's ack, print a receipt.

Exit codes (errors.ExitCode): 0 delivered; 3 nobody else received it (--require-recipient);
4 could not connect; 5 rejected by the server (its error code in the message; a refused
login with --account too); 6 timed out; 8 the server gave another nick than the one asked
for (--require-nick), and nothing was sent.

The server gives a free variant of a nick that is taken (carol2 for carol): the receipt says
so ("sent as carol2: carol is taken"; JSON: `nick` and `nick_asked`).

Several addresses: they are tried in order until one accepts the connection (a wrong password,
an untrusted certificate and the like stop at once), and if the connection is lost before
the acknowledgements, the rest of them once more, from the one that was lost, with the same
message ids (a server that stored a message before the loss acknowledges it without storing
it twice). Exit 4 only when all fail; the error line says what each said.
Kept light: no typer, rich or prompt_toolkit here, so the command starts fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatctl.address import Address
from chatctl.client.connection import Backoff, Client, Outgoing, default_nick
from chatctl.errors import ChatctlError, ExitCode, NickTaken, NoRecipient
from chatctl.names import room_key
from chatctl.protocol import Ack

if TYPE_CHECKING:
    import ssl

    from chatctl.client.trust import ServerTrust


NO_MESSAGE = "no message: give MESSAGE as an argument, or pipe it on stdin"


def _read_message(message: str | None) -> str:
    if message is not None and message != "-":
        return message
    if message is None and sys.stdin.isatty():
        # Nothing says a message is wanted from the keyboard: do not wait there silently.
        raise ChatctlError(NO_MESSAGE, ExitCode.USAGE)
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError:
        raise ChatctlError("stdin is not valid UTF-8", ExitCode.USAGE) from None
    return strip_newline(text)


def strip_newline(text: str) -> str:
    """`text` without the one newline (\n or \r\n) that ends a line of input: `echo` and
    editors add it, and it is not part of the message. Any other newline stays."""
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        raise ChatctlError(NO_MESSAGE, ExitCode.USAGE)
    return text


def nick_note(asked: str, got: str) -> str:
    """What the receipt adds when the server gave another nick than the one asked for."""
    if got == asked:
        return ""
    if got.casefold() == asked.casefold():
        return f"; sent as {got}"
    return f"; sent as {got}: {asked} is taken"


def receipt(out: Outgoing, ack: Ack, *, nick: str = "", asked: str = "") -> str:
    request = out.request
    where = f"#{ack.room}" if ack.room else f"@{getattr(request, 'to', '')}"
    members = "member" if ack.recipients == 1 else "members"
    seq = f" seq {ack.seq}" if ack.seq else ""
    note = nick_note(asked, nick) if asked and nick else ""
    return f"delivered to {where}{seq}, reached {ack.recipients} {members}{note}"


def receipt_record(
    out: Outgoing, ack: Ack, *, nick: str = "", asked: str = ""
) -> dict[str, object]:
    return {
        "msg_id": out.msg_id,
        "room": ack.room or None,
        "to": getattr(out.request, "to", None),
        "seq": ack.seq,
        "ts": ack.ts,
        "recipients": ack.recipients,
        "nick": nick,  # the nick it was sent as: the server's, which may differ from...
        "nick_asked": asked,  # ...the one asked for (taken by someone else)
    }


def run_send(
    *,
    message: str | None,
    addresses: Sequence[Address],
    room: str,
    to: str | None,
    nick: str | None,
    count: int = 1,
    json_out: bool = False,
    require_recipient: bool = False,
    require_nick: bool = False,
    action: bool = False,
    timeout: float | None = 10.0,
    connect_timeout: float = 5.0,
    tls: ssl.SSLContext | ServerTrust | None = None,
    account: str = "",
    password: str = "",
) -> int:
    text = _read_message(message)
    deadline = None if timeout is None else time.monotonic() + timeout
    room = room_key(room)
    asked = nick or account or default_nick()
    client = Client(
        addresses,
        nick=asked,
        rooms=(),  # the server takes a Say from a non-member: no join/leave noise
        connect_timeout=connect_timeout,
        tls=tls,
        account=account,
        password=password,
        # With several servers, a connection lost before the acks gets one more round.
        reconnect=len(addresses) > 1,
        backoff=Backoff(max_attempts=1),
    )
    try:
        welcome = client.connect()
        if require_nick and welcome.nick != asked:
            raise NickTaken(
                f"not sent: the server gave the nick {welcome.nick}, not {asked} "
                f"({asked} is taken; --require-nick)"
            )
        outs = [
            client.tell(to, text, action=action) if to else client.say(room, text, action=action)
            for _ in range(count)
        ]
        acks: list[Ack] = []
        for out in outs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            acks.append(out.wait(left))
    finally:
        client.close()
    got = client.nick  # the last Welcome's (another server's, after a failover)
    for out, ack in zip(outs, acks, strict=True):
        if json_out:
            print(json.dumps(receipt_record(out, ack, nick=got, asked=asked)))
        else:
            print(receipt(out, ack, nick=got, asked=asked))
    if require_recipient and any(ack.recipients == 0 for ack in acks):
        raise NoRecipient("nobody else received it")
    return 0
