"""`chatctl bot` as a real subprocess, for tests of the bot in a real chat.

- `bot_process(host, port, *args)`: `python -m chatctl bot HOST --port PORT ARGS`, connected;
  stopped with SIGTERM at exit, where it must exit 0.
- `bot_in_lobby(*args, **server)`: a real server, alice (a tests.servers.Client) in #lobby,
  and the bot there; yields (alice, bot).
- `wait_joined(client, nick)`, `from_bot(client)`: the bot's arrival, the bot's next message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chatctl.protocol import Message, Notice
from tests.servers import Client, ServeProcess, running_server, start_chatctl


@contextmanager
def bot_process(host: str, port: int, *args: str) -> Iterator[ServeProcess]:
    """`python -m chatctl bot HOST --port PORT ...`; its stderr log is collected; stopped with
    SIGTERM (it must exit 0) and killed if it does not."""
    handle = start_chatctl("bot", host, "--port", str(port), *args)
    try:
        handle.wait_for_line(r"connected to .* as ")
        yield handle
        handle.proc.terminate()
        assert handle.proc.wait(timeout=10) == 0, "".join(handle.lines)
    finally:
        handle.stop()


@contextmanager
def bot_in_lobby(*args: str, **server: Any) -> Iterator[tuple[Client, ServeProcess]]:
    """A real server (`server` overrides its settings), alice in #lobby, and `chatctl bot
    ARGS` there, its arrival seen by alice."""
    with (
        running_server(**server) as (host, port),
        Client.connect(host, port, "alice", "lobby") as alice,
        bot_process(host, port, *args) as bot,
    ):
        wait_joined(alice, bot_nick(args))
        yield alice, bot


def bot_nick(args: tuple[str, ...]) -> str:
    return args[args.index("--nick") + 1] if "--nick" in args else "ai"


def wait_joined(client: Client, nick: str = "ai") -> None:
    client.wait_for(Notice, lambda n: n.kind == "joined" and n.nick == nick)


def from_bot(client: Client, timeout: float = 10.0) -> Message:
    return client.wait_for(Message, lambda m: m.sender == "ai", timeout=timeout)
