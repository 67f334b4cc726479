"""The client library's own events, delivered next to the protocol's.

The application sees protocol events (Message, DirectMessage, Notice, Members, RoomList, Gap,
HistoryEnd, Error) and these: Delivered and Refused answer its messages (ClientSession makes
them), Disconnected, Reconnected and Closed tell about the connection (Client makes them).
"""

from __future__ import annotations

from dataclasses import dataclass

from chatctl.address import Address
from chatctl.errors import ChatctlError
from chatctl.protocol import Ack, Error, Event, Say, Tell, Welcome


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivered:
    """The server acknowledged our `request`. Render our own message from this: the server
    does not echo it back."""

    request: Say | Tell
    ack: Ack
    nick: str  # our nick when the ack arrived


@dataclass(frozen=True, kw_only=True, slots=True)
class Refused:
    """The server refused our `request` with `error`."""

    request: Say | Tell
    error: Error


@dataclass(frozen=True, kw_only=True, slots=True)
class Disconnected:
    """The connection dropped. With `retrying`, a reconnect is under way."""

    reason: str
    retrying: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Reconnected:
    """Back after a drop; rooms rejoined, unacknowledged messages re-sent. `address` is the
    server it is back on (another one than before when the client fails over); with
    `new_session` that server did not know the resume token (another server's, or one that
    lost its data), so this is a new session there: rooms were joined anew."""

    welcome: Welcome
    attempts: int  # rounds of the addresses
    address: Address | None = None
    new_session: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Closed:
    """The last event: the client is finished. `error` says why when it was not our choice."""

    reason: str
    error: ChatctlError | None = None


ClientEvent = Delivered | Refused | Disconnected | Reconnected | Closed
AnyEvent = Event | ClientEvent

__all__ = [
    "AnyEvent",
    "ClientEvent",
    "Closed",
    "Delivered",
    "Disconnected",
    "Reconnected",
    "Refused",
]
