"""The plain TCP transport and the listeners over real loopback connections; and Peer.write_once
through a transport whose kernel buffer fills up."""

from __future__ import annotations

import select
import selectors
import socket
import time
from collections.abc import Iterator
from itertools import accumulate

import pytest

from chatctl.address import format_addr
from chatctl.errors import ChatctlError
from chatctl.protocol import Ping, Say, encode
from chatctl.server.admission import Client as Address
from chatctl.server.batch import Batch
from chatctl.server.config import ServerConfig
from chatctl.server.peer import Peer
from chatctl.server.transport import Listeners, TcpTransport, Transport, drain

DEADLINE = 5.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, Transport, Listeners]]:
    """A client socket and the server's transport of the same TCP connection."""
    listeners = Listeners()
    (host, port), *_ = listeners.open(["127.0.0.1"], 0)
    client = socket.create_connection((host, port), timeout=DEADLINE)
    try:
        ready, _, _ = select.select(listeners.socks, [], [], DEADLINE)
        assert ready, "the listener never saw the connection"
        transport, ip, peer_port = listeners.accept(ready[0])
        assert (ip, peer_port) == client.getsockname()
        try:
            yield client, transport, listeners
        finally:
            transport.close()
    finally:
        client.close()
        listeners.close(None)


def readable(sock: socket.socket | Transport) -> bool:
    ready, _, _ = select.select([sock], [], [], DEADLINE)
    return bool(ready)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"end of stream after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_tcp_transport_is_non_blocking_without_nagle(
    pair: tuple[socket.socket, Transport, Listeners],
) -> None:
    _, transport, _ = pair
    assert transport.sock.getblocking() is False
    assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert transport.fileno() == transport.sock.fileno() >= 0


def test_bytes_in_through_the_shared_buffer(
    pair: tuple[socket.socket, Transport, Listeners],
) -> None:
    client, transport, _ = pair
    buf = bytearray(64)
    with pytest.raises(BlockingIOError):
        transport.recv_into(buf, len(buf))  # nothing yet: the loop's "not now"
    client.sendall(b"CC hello")
    assert readable(transport)
    n = transport.recv_into(buf, len(buf))
    assert bytes(buf[:n]) == b"CC hello"
    client.close()
    assert readable(transport)
    assert transport.recv_into(buf, len(buf)) == 0  # the end of the stream


def test_send_takes_what_the_kernel_takes_then_shutdown_is_a_clean_end(
    pair: tuple[socket.socket, Transport, Listeners],
) -> None:
    client, transport, _ = pair
    payload = bytes(range(256)) * 16384  # 4 MiB: more than the kernel buffers hold
    sent = 0
    while sent < len(payload):
        try:
            n = transport.send(memoryview(payload)[sent:])
        except BlockingIOError:
            break
        assert n > 0
        sent += n
    assert 0 < sent < len(payload), "the kernel took everything: this test shows nothing"
    assert recv_exactly(client, sent) == payload[:sent]
    transport.shutdown_write()
    assert readable(client)
    assert client.recv(1) == b""  # a FIN, not a reset
    client.sendall(b"still open")  # the other direction still works
    assert readable(transport)
    buf = bytearray(64)
    assert bytes(buf[: transport.recv_into(buf, len(buf))]) == b"still open"


def test_drain_discards_until_the_client_closes(
    pair: tuple[socket.socket, Transport, Listeners],
) -> None:
    client, transport, _ = pair
    buf = bytearray(16)
    assert drain(transport, buf) is False  # nothing to read
    client.sendall(b"ignored")
    assert readable(transport)
    assert drain(transport, buf) is False
    client.close()
    assert readable(transport)
    assert drain(transport, buf) is True
    transport.close()
    assert transport.fileno() == -1
    assert drain(transport, buf) is True  # a closed transport counts as closed


def test_peer_write_once_keeps_the_rest_and_its_alignment(
    pair: tuple[socket.socket, Transport, Listeners],
) -> None:
    client, transport, _ = pair
    address = Address("127.0.0.1", ServerConfig(rate=0), 0.0)
    peer = Peer(1, transport, "127.0.0.1", "x", 0.0, max_frame=1024, client=address)
    batch = Batch((1, 2))
    frames = [
        encode(Say(msg_id=str(i), room="r", text=chr(65 + i % 26) * 100_000)) for i in range(60)
    ]  # 6 MB
    for frame in frames:
        batch.add(frame)
    first, private = encode(Ping(token=1)), encode(Ping(token=2))
    batch.add_private(private, 1)
    peer.out = [first, batch]
    expected = first + b"".join(frames) + private
    left = peer.write_once()
    assert 0 < left < len(expected)
    # The kernel took part of the stream, most likely ending inside a frame: what is left of
    # that frame is counted, and is the front of the rest.
    sent = len(expected) - left
    frame_end = next(end for end in accumulate(map(len, [first, *frames, private])) if end >= sent)
    assert peer.frame_left == frame_end - sent
    assert peer.aligned is (frame_end == sent)
    (rest,) = peer.out
    assert isinstance(rest, memoryview) and len(rest) == peer.out_size == left
    received = recv_exactly(client, len(expected) - left)
    deadline = time.monotonic() + DEADLINE
    while left:
        assert time.monotonic() < deadline, "the rest never went out"
        left = peer.write_once()
        client.setblocking(False)
        try:
            while True:
                received += client.recv(1 << 20)
        except BlockingIOError:
            pass
        client.setblocking(True)
    received += recv_exactly(client, len(expected) - len(received))
    assert received == expected
    assert (peer.frame_left, peer.aligned, peer.out, peer.out_size) == (0, True, [], 0)


def test_listeners_watch_pause_and_close() -> None:
    listeners = Listeners()
    sel = selectors.DefaultSelector()
    try:
        addresses = listeners.open(["127.0.0.1", "127.0.0.2"], 0)
        ports = {port for _, port in addresses}
        assert len(ports) == 1  # with port 0, every address shares the first one's port
        listeners.watch(sel, "tag")
        assert {key.data for key in sel.get_map().values()} == {"tag"}
        listeners.watch(sel, None)
        assert not sel.get_map()
        listeners.watch(sel, "tag")
        listeners.close(sel)
        assert not sel.get_map() and listeners.socks == []
    finally:
        listeners.close(sel)
        sel.close()


def test_listening_on_a_bad_address_or_a_taken_port_is_one_error() -> None:
    with pytest.raises(ChatctlError, match="bad address"):
        Listeners().open(["no such host.invalid"], 0)
    taken = Listeners()
    try:
        ((_, port),) = taken.open(["127.0.0.1"], 0)
        again = Listeners()
        with pytest.raises(ChatctlError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            again.open(["127.0.0.1"], port)
        assert again.socks == []
    finally:
        taken.close(None)


def test_format_addr_brackets_ipv6() -> None:
    assert format_addr("127.0.0.1", 80) == "127.0.0.1:80"
    assert format_addr("::1", 80) == "[::1]:80"


def test_tcp_transport_binds_the_socket_methods() -> None:
    """The seam costs the hot path nothing: recv_into and send are the socket's own."""
    a, b = socket.socketpair()
    with a, b:
        transport = TcpTransport(a)
        assert transport.send == a.send and transport.recv_into == a.recv_into
