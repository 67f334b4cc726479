"""The client library (`chatctl.client.connection.Client`) in tests: waits with a deadline,
never a sleep.

- `WAIT`: the seconds a test waits for anything that should come at once (generous: a loaded
  CI machine is slow, and a passing test never waits that long).
- `wait_for(client, kind, where)`: the next event of `kind` the client reports that matches
  `where`; fails after `timeout`, or at once if the client closes.
- `joined(addr, nick, *rooms, **options)`: a connected client, each room's join replay consumed.

The raw protocol client of tests/servers.py has its own `Client.wait_for`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from chatctl.client import AnyEvent, Client, Closed
from chatctl.names import room_key
from chatctl.protocol import HistoryEnd

E = TypeVar("E")
WAIT = 10.0


def wait_for(
    client: Client,
    kind: type[E],
    where: Callable[[E], bool] = lambda e: True,
    timeout: float = WAIT,
    seen: list[AnyEvent] | None = None,
) -> E:
    """The next event of `kind` matching `where`; the ones passed over go to `seen`."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = client.next_event(left)
        if isinstance(event, kind) and where(event):
            return event
        if event is not None and seen is not None:
            seen.append(event)
        if isinstance(event, Closed) and kind is not Closed:
            raise AssertionError(f"closed while waiting for {kind.__name__}: {event}")
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


def joined(addr: tuple[str, int], nick: str, *rooms: str, **options: object) -> Client:
    """`nick` connected to `addr` (Client `options`), each of `rooms` joined and its replay
    consumed."""
    client = Client(addr[0], addr[1], nick=nick, rooms=rooms, **options)  # type: ignore[arg-type]
    client.connect()
    for room in map(room_key, rooms):
        wait_for(client, HistoryEnd, lambda e, r=room: e.room == r)  # type: ignore[misc]
    return client
