"""RESP2, the Redis wire protocol, sans-IO: commands in, bytes out; bytes in, replies out.

`command(*args)` encodes one command (an array of bulk strings). A `Pipeline` queues commands
with a tag each, hands their bytes out in one piece (`data_to_send`), and matches the replies
it is fed (`receive`, any chunking) to the tags in order: Redis answers the commands of one
connection in the order it read them. An error reply is a value (`RedisError`), never raised:
it answers its command and the ones after it go on. Parsing is hiredis's `Reader` (C).

Nothing here touches a socket or a clock; link.py runs a Pipeline over a non-blocking socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeAlias, TypeVar

import hiredis

from chatctl.errors import ChatctlError

T = TypeVar("T")

# A reply bigger than this is not one this package's commands can get (an XREAD of at most a
# few thousand entries of at most a frame each): the peer is not the Redis we think it is.
MAX_REPLY_BUFFER = 256 * 1024 * 1024


class RedisError(Exception):
    """An error reply ("ERR ...", "WRONGTYPE ...", "OOM ..."), as a value."""

    @property
    def kind(self) -> str:
        """The error's first word, its class by Redis's convention: "ERR", "OOM", ..."""
        return str(self).partition(" ")[0]


# What Redis may answer in RESP2: a simple or bulk string, an integer, nil, an array of these,
# or an error. Strings stay bytes: the caller knows which of its fields are text.
Reply: TypeAlias = "bytes | int | list[Reply] | RedisError | None"


class RespProtocolError(ChatctlError):
    """The peer sent something that is not RESP, or a reply no command was waiting for: the
    connection cannot be trusted any more and must be closed."""


_NEED = object()  # hiredis's "no complete reply yet", distinct from any reply (False is not)


def _arg(value: bytes | str | int) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogatepass")
    if type(value) is int:
        return b"%d" % value
    raise TypeError(f"a Redis argument is bytes, str or int, not {type(value).__name__}")


def command(*args: bytes | str | int) -> bytes:
    """One command as Redis reads it: `*N` then each argument as a bulk string."""
    if not args:
        raise ValueError("a command has at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for value in args:
        data = _arg(value)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def command_ending_with(*args: bytes | str | int) -> Callable[[bytes], bytes]:
    """`command(*args, last)` as a function of `last`, for a command sent for every message:
    the fixed arguments are encoded once."""
    head = command(*args, b"")[: -len(b"$0\r\n\r\n")]  # the count is already args + 1

    def encode(last: bytes) -> bytes:
        return b"%s$%d\r\n%s\r\n" % (head, len(last), last)

    return encode


class Pipeline(Generic[T]):
    """The commands of one connection and their replies, matched in order.

    `send(data, tag)` queues an encoded command; `data_to_send()` takes everything queued, in
    order, as one bytes object (those commands are then in flight); `receive(data)` returns
    `(tag, reply)` for each reply completed by `data`, in order. When the connection is lost,
    `reset()` says which commands were never handed out (they certainly did not run) and which
    were in flight (they may have run), and starts afresh for a new connection.
    """

    def __init__(self) -> None:
        self._reader = self._new_reader()
        self._queued: list[bytes] = []
        self._queued_tags: list[T] = []
        self._in_flight: deque[T] = deque()

    @staticmethod
    def _new_reader() -> hiredis.Reader:
        return hiredis.Reader(replyError=RedisError, notEnoughData=_NEED)

    @property
    def queued(self) -> int:
        """Commands waiting for `data_to_send`."""
        return len(self._queued_tags)

    @property
    def in_flight(self) -> int:
        """Commands handed out whose replies have not come yet."""
        return len(self._in_flight)

    def send(self, data: bytes, tag: T) -> None:
        self._queued.append(data)
        self._queued_tags.append(tag)

    def data_to_send(self) -> bytes:
        if not self._queued_tags:
            return b""
        data = b"".join(self._queued)
        self._in_flight.extend(self._queued_tags)
        self._queued.clear()
        self._queued_tags.clear()
        return data

    def receive(self, data: bytes) -> list[tuple[T, Reply]]:
        """The replies `data` completes, each with its command's tag. Raises
        RespProtocolError for bytes that are not RESP, or a reply nothing waits for."""
        reader = self._reader
        if data:
            if reader.len() + len(data) > MAX_REPLY_BUFFER:
                raise RespProtocolError(f"a reply longer than {MAX_REPLY_BUFFER} bytes")
            reader.feed(data)
        out: list[tuple[T, Reply]] = []
        in_flight = self._in_flight
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                raise RespProtocolError(f"not RESP: {exc}") from None
            if reply is _NEED:
                return out
            if not in_flight:
                raise RespProtocolError("a reply that no command was waiting for")
            out.append((in_flight.popleft(), reply))

    def reset(self) -> tuple[list[T], list[T]]:
        """The connection is gone: (tags never handed out, tags in flight), each in order.
        The pipeline is then empty, ready for a new connection."""
        unsent = self._queued_tags[:]
        unknown = list(self._in_flight)
        self._queued.clear()
        self._queued_tags.clear()
        self._in_flight.clear()
        self._reader = self._new_reader()
        return unsent, unknown
