"""`chatctl send`: deliver one message, wait for the server's ack, print a receipt.

Exit codes (errors.ExitCode): 0 delivered; 3 nobody else received it (--require-recipient);
4 could not connect; 5 rejected by the server (its error code in the message; a refused
login with --account too); 6 timed out.
Kept light: no typer, rich or prompt_toolkit here, so the command starts fast.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from chatctl.client.connection import Client, Outgoing, default_nick
from chatctl.errors import ChatctlError, ExitCode, NoRecipient
from chatctl.names import room_key
from chatctl.protocol import Ack

if TYPE_CHECKING:
    import ssl

    from chatctl.client.trust import ServerTrust


def _read_message(message: str | None) -> str:
    if message is not None and message != "-":
        return message
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError:
        raise ChatctlError("stdin is not valid UTF-8", ExitCode.USAGE) from None
    # Drop the newline(s) `echo` and editors add; inner newlines stay.
    text = text.rstrip("\r\n")
    if not text:
        raise ChatctlError("no message: give MESSAGE, or pipe it on stdin", ExitCode.USAGE)
    return text


def receipt(out: Outgoing, ack: Ack) -> str:
    request = out.request
    where = f"#{ack.room}" if ack.room else f"@{getattr(request, 'to', '')}"
    members = "member" if ack.recipients == 1 else "members"
    seq = f" seq {ack.seq}" if ack.seq else ""
    return f"delivered to {where}{seq}, reached {ack.recipients} {members}"


def receipt_record(out: Outgoing, ack: Ack) -> dict[str, object]:
    return {
        "msg_id": out.msg_id,
        "room": ack.room or None,
        "to": getattr(out.request, "to", None),
        "seq": ack.seq,
        "ts": ack.ts,
        "recipients": ack.recipients,
    }


def run_send(
    *,
    message: str | None,
    host: str,
    port: int,
    room: str,
    to: str | None,
    nick: str | None,
    count: int = 1,
    json_out: bool = False,
    require_recipient: bool = False,
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
    client = Client(
        host,
        port,
        nick=nick or account or default_nick(),
        rooms=(),  # the server takes a Say from a non-member: no join/leave noise
        connect_timeout=connect_timeout,
        tls=tls,
        account=account,
        password=password,
    )
    try:
        client.connect()
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
    for out, ack in zip(outs, acks, strict=True):
        if json_out:
            print(json.dumps(receipt_record(out, ack)))
        else:
            print(receipt(out, ack))
    if require_recipient and any(ack.recipients == 0 for ack in acks):
        raise NoRecipient("nobody else received it")
    return 0
