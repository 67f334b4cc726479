"""The client library that `join`, `send` and the bot are built on.

- `session.py`: `ClientSession`, the rules, sans-IO: rooms and their sequence numbers,
  acknowledgements, the resume after a reconnect (re-sends, paged catch-up, exactly once).
- `connection.py`: `Client`, the I/O: a blocking socket, a reader thread, reconnect with
  `Backoff`, pacing, `Outgoing` handles, events to a queue or a callback.
- `link.py`: one TCP or TLS connection and its handshake; the pacer.
- `trust.py`: what a TLS client trusts: CAs, then trust on first use (`known_servers`).
- `events.py`: the client's own events (`Delivered`, `Refused`, `Disconnected`,
  `Reconnected`, `Closed`), delivered next to the protocol's.
"""

from chatctl.client.connection import Backoff, Client, Outgoing, default_nick
from chatctl.client.events import (
    AnyEvent,
    ClientEvent,
    Closed,
    Delivered,
    Disconnected,
    Reconnected,
    Refused,
)
from chatctl.client.session import ClientSession

__all__ = [
    "AnyEvent",
    "Backoff",
    "Client",
    "ClientEvent",
    "ClientSession",
    "Closed",
    "Delivered",
    "Disconnected",
    "Outgoing",
    "Reconnected",
    "Refused",
    "default_nick",
]
