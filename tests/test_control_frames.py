"""Welcome and Bye are encoded once, in the hub: the loop sends those very bytes and only tells
the connection's state machine (`Connection.sent`); the wire bytes are what `encode` makes."""

from __future__ import annotations

import socket
import time

import pytest

from chatctl.protocol import (
    HEADER,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Bye,
    Connection,
    ErrorCode,
    Event,
    Hello,
    Join,
    LocalProtocolError,
    Role,
    State,
    Welcome,
    decode_body,
    encode,
)
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Hub
from chatctl.store.memory import MemoryStore
from tests.servers import Client, running_server


def hello(nick: str, token: str = "", version: int = PROTOCOL_VERSION) -> Hello:
    return Hello(version=version, nick=nick, token=token)


def test_the_hub_hands_welcome_and_bye_over_with_their_event() -> None:
    hub = Hub(ServerConfig(), MemoryStore())
    (welcome,) = hub.handle(1, hello("alice"), 0)
    assert type(welcome.control) is Welcome and welcome.to == (1,)
    assert welcome.data == encode(welcome.control)
    # A reconnect with alice's token: the old connection is told why, the new one welcomed.
    replaced, again = hub.handle(2, hello("alice", welcome.control.token), 0)
    assert replaced.to == (1,)
    assert replaced.control == Bye(
        code=ErrorCode.REPLACED, reason="your session was taken over by a new connection from -"
    )
    assert replaced.data == encode(replaced.control)
    assert type(again.control) is Welcome and again.to == (2,)
    for refused in (hub.handle(3, hello("1nick"), 0), hub.handle(4, hello("bob", version=0), 0)):
        (bye,) = refused
        assert type(bye.control) is Bye and bye.data == encode(bye.control)
    # Everything else is plain bytes for the loop to queue.
    assert all(d.control is None for d in hub.handle(2, Join(room="lobby"), 0))


def test_sent_advances_the_state_as_send_does() -> None:
    sending, told = Connection(Role.SERVER), Connection(Role.SERVER)
    for conn in (sending, told):
        conn.receive_data(encode(hello("alice")))
        assert type(conn.next_event()) is Hello
    welcome = Welcome(protocol=1, server="chatctl", version="1", nick="alice", token="t" * 16)
    data = sending.send(welcome)
    told.sent(welcome)
    assert (sending.state, told.state) == (State.READY, State.READY)
    assert data == encode(welcome)
    with pytest.raises(LocalProtocolError):
        told.sent(welcome)  # only once
    told.sent(Bye())
    assert told.state is State.CLOSED


def read_frame(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    need = HEADER_SIZE
    while len(data) < need:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(need - len(data))
        assert chunk, "the server closed the stream mid-frame"
        data += chunk
        if len(data) == HEADER_SIZE:
            need += HEADER.unpack(data)[3]
    return data


def test_the_server_sends_the_hubs_bytes_without_encoding_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded_again: list[type[Event]] = []
    send = Connection.send

    def spy(self: Connection, event: Event) -> bytes:
        if self.our_role is Role.SERVER:
            encoded_again.append(type(event))
        return send(self, event)

    monkeypatch.setattr(Connection, "send", spy)
    with running_server() as (host, port):
        alice = socket.create_connection((host, port), timeout=10)
        with alice:
            alice.sendall(encode(hello("alice")))
            frame = read_frame(alice, time.monotonic() + 10)
            welcome = decode_body(frame[2], frame[HEADER_SIZE:])
            assert type(welcome) is Welcome
            assert frame == encode(welcome)  # the wire bytes: exactly encode()'s
            with Client(host, port) as again:
                again.hello("alice", token=welcome.token)
                frame = read_frame(alice, time.monotonic() + 10)
                source = f"127.0.0.1:{again.sock.getsockname()[1]}"
                reason = f"your session was taken over by a new connection from {source}"
                assert frame == encode(Bye(code=ErrorCode.REPLACED, reason=reason))
        assert encoded_again == []  # two Welcomes and a Bye went out, none encoded twice
