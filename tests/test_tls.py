"""TLS on the server's event loop (server/tls.py) and tls:// addresses in the client: real
handshakes against a test CA from trustme, no sleeps."""

from __future__ import annotations

import io
import os
import select
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from chatctl.client import Client as LibClient
from chatctl.client.link import client_context
from chatctl.errors import ConnectFailed, Rejected
from chatctl.protocol import Bye, Hello, Join, Message, Notice, encode
from chatctl.server.loop import Server
from chatctl.server.tls import (
    CERT_FILE,
    KEY_FILE,
    TlsTransport,
    fingerprint,
    server_context,
)
from chatctl.server.transport import WRITE_CHUNK
from tests.clients import wait_for
from tests.servers import Client, run_chatctl, serve_process, server_instance

ROOM = "tls"


def tls_server(
    pki: dict[str, str], **overrides: Any
) -> AbstractContextManager[tuple[Server, str, int]]:
    return server_instance(tls_cert=pki["cert"], tls_key=pki["key"], **overrides)


def log_of(server: Server) -> str:
    stream = server.journal.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def test_library_clients_chat_over_tls(pki: dict[str, str]) -> None:
    context = client_context(pki["ca"])
    with tls_server(pki) as (server, host, port):
        alice = LibClient(host, port, nick="alice", rooms=[ROOM], tls=context)
        bob = LibClient(host, port, nick="bob", rooms=[ROOM], tls=context)
        alice.connect()
        bob.connect()
        try:
            wait_for(alice, Notice, lambda n: n.nick == "bob")
            ack = bob.say(ROOM, "over TLS").wait(10)
            assert ack.recipients == 1
            assert wait_for(alice, Message).text == "over TLS"
        finally:
            alice.close()
            bob.close()
        assert "Traceback" not in log_of(server)


def test_chatctl_send_to_a_tls_url(pki: dict[str, str]) -> None:
    with tls_server(pki) as (_, host, port):
        context = ssl.create_default_context(cafile=pki["ca"])
        listener = Client.connect(host, port, "listener", ROOM, tls=context)
        done = run_chatctl(
            "send", f"tls://{host}:{port}", "hello tls", "--room", ROOM, "--tls-ca", pki["ca"]
        )
        assert done.returncode == 0, done.stderr
        assert listener.wait_for(Message).text == "hello tls"
        # Without the CA the system's do not know the test CA: one line, exit 4.
        refused = run_chatctl("send", f"tls://{host}:{port}", "no")
        assert refused.returncode == 4
        assert refused.stderr.startswith("chatctl: cannot trust 127.0.0.1:")
        assert len(refused.stderr.strip().splitlines()) == 1


def test_plaintext_client_on_a_tls_port_is_told_in_clear(pki: dict[str, str]) -> None:
    with tls_server(pki) as (server, host, port):
        client = LibClient(host, port, nick="plain")
        with pytest.raises(
            Rejected, match=rf"this port speaks TLS: connect with tls://{host}:{port}"
        ):
            client.connect()
        done = run_chatctl("send", f"{host}:{port}", "plain text")
        assert done.returncode == 5
        assert f"this port speaks TLS: connect with tls://{host}:{port}" in done.stderr
        lines = [line for line in log_of(server).splitlines() if "plaintext client" in line]
        assert len(lines) == 2  # one line per connection, nothing else about them
        assert "disconnected" not in log_of(server)


def test_tls_client_on_a_plaintext_port_gets_one_line(pki: dict[str, str]) -> None:
    with server_instance() as (server, host, port):
        client = LibClient(host, port, nick="tls", tls=client_context(pki["ca"]))
        with pytest.raises(ConnectFailed) as caught:
            client.connect()
        assert str(caught.value) == f"{host}:{port} does not speak TLS (use chat://{host}:{port})"
        done = run_chatctl("send", f"tls://{host}:{port}", "x", "--tls-ca", pki["ca"])
        assert done.returncode == 4
        assert done.stderr.strip() == f"chatctl: {caught.value}"
        lines = [line for line in log_of(server).splitlines() if "TLS client" in line]
        assert len(lines) == 2


def test_plain_client_reading_tls_is_told_to_use_tls() -> None:
    """Some other TLS server answers a plaintext Hello with a TLS alert."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def answer() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"\x15\x03\x03\x00\x02\x02\x46")  # alert: protocol version
            conn.recv(1024)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConnectFailed) as caught:
            LibClient("127.0.0.1", port, nick="plain").connect()
        assert str(caught.value) == f"127.0.0.1:{port} speaks TLS: use tls://127.0.0.1:{port}"
    finally:
        thread.join(10)
        lsock.close()


def test_failed_handshake_is_one_line_and_nothing_for_the_others(pki: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    with tls_server(pki) as (server, host, port):
        member = Client.connect(host, port, "member", ROOM, tls=context)
        before = list(member.seen)
        with socket.create_connection((host, port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01\x00\x05garbage and more garbage")
            raw.settimeout(10)
            while raw.recv(4096):  # the server's alert, then its close
                pass
        assert member.say(ROOM, "still here").recipients == 0
        assert member.seen == before  # nobody heard of it
        lines = [line for line in log_of(server).splitlines() if "TLS handshake failed" in line]
        assert len(lines) == 1


def test_handshake_must_finish_within_the_handshake_timeout(pki: dict[str, str]) -> None:
    with tls_server(pki, handshake_timeout=0.3) as (server, host, port):
        with socket.create_connection((host, port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01")  # the start of a record, never the rest
            raw.settimeout(10)
            assert raw.recv(4096) == b""  # closed by the server, well before our timeout
        assert "sent no Hello within 0.3 s" in log_of(server)


def test_abrupt_tls_eof_is_a_clean_disconnect_for_the_others(pki: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    with tls_server(pki) as (server, host, port):
        witness = Client.connect(host, port, "witness", ROOM, tls=context)
        victim = Client.connect(host, port, "victim", ROOM, tls=context)
        witness.wait_for(Notice, lambda n: n.nick == "victim")
        victim.sock.sendall(encode(Hello(version=1, nick="x"))[:5])  # half a frame
        # The TCP connection ends without a close_notify.
        socket.socket.shutdown(victim.sock, socket.SHUT_RDWR)
        victim.sock.close()
        dropped = witness.wait_for(Notice, lambda n: n.kind == "dropped")
        assert dropped.nick == "victim" and "connection lost" in dropped.reason
        assert witness.say(ROOM, "after").recipients == 0
        assert log_of(server).count("\n") == 1  # "listening on": no traceback, no warning


def test_big_message_and_big_replay_arrive_intact_over_tls(pki: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    size, count = 10_000, 1000  # the longest text the default frame limit allows
    settings = {"max_text": size, "rate": 0, "join_history": count, "max_output": 64 << 20}
    with tls_server(pki, **settings) as (_, host, port):
        talker = Client.connect(host, port, "talker", ROOM, tls=context)
        listener = Client.connect(host, port, "listener", ROOM, tls=context)
        talker.say(ROOM, "x" * size)
        assert listener.wait_for(Message).text == "x" * size
        texts = [f"{i:04d}" + chr(ord("a") + i % 26) * (size - 4) for i in range(count)]
        for text in texts:
            talker.say(ROOM, text)
        # 10 MB of replay at once into a small receive buffer: many partial writes of
        # ciphertext, and nothing sent after it that could flush a forgotten remainder.
        reader = Client(host, port, tls=context, rcvbuf=4096)
        reader.hello("reader")
        reader.send(Join(room=ROOM))
        got = [reader.wait_for(Message, timeout=30).text for _ in texts]
        assert got == texts[-count:][: len(got)] and len(got) == count


def test_tls_slow_reader_is_dropped_like_a_plain_one(pki: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    with tls_server(pki, max_output=64 * 1024, rate=0) as (server, host, port):
        alice = Client.connect(host, port, "alice", ROOM, tls=context)
        bob = Client.connect(host, port, "bob", ROOM, tls=context)
        sleeper = Client(host, port, tls=context, rcvbuf=4096)
        sleeper.send_raw(encode(Hello(version=1, nick="sleeper")) + encode(Join(room=ROOM)))
        alice.wait_for(Notice, lambda n: n.nick == "sleeper")
        sent = 0
        while True:
            bob.say(ROOM, f"{sent} " + "x" * 1000)
            sent += 1
            assert alice.wait_for(Message, lambda m: m.sender == "bob").text.startswith(
                f"{sent - 1} "
            )
            dropped = [e for e in alice.seen if type(e) is Notice and e.kind == "dropped"]
            if dropped:
                assert dropped[0].nick == "sleeper"
                assert "slow consumer" in dropped[0].reason
                break
            assert sent < 10_000
        sleeper.close()
        assert bob.say(ROOM, "still served").recipients == 1
        assert "sleeper) reads too slowly" in log_of(server)


def test_close_sends_close_notify_after_the_bye(pki: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    with tls_server(pki) as (_, host, port):
        client = Client.connect(host, port, "leaving", tls=context)
        client.send(Bye())
        assert client.wait_closed() is None
        # wait_closed saw the end of the stream: the SSL layer read a close_notify (a ragged
        # EOF would be a plain EOF with suppress_ragged_eofs; unwrap proves the difference).
        assert isinstance(client.sock, ssl.SSLSocket)
        client.sock.settimeout(5)
        client.sock.unwrap()


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_self_signed_is_made_once_and_its_fingerprint_shown(data_dir: Path) -> None:
    shown: list[str] = []
    for _ in range(2):
        with serve_process("--tls-self-signed", "--data", str(data_dir)) as server:
            line = server.wait_for_line(r"speaking TLS only: .*(SHA256:[0-9A-F:]+)").group(1)
            shown.append(line)
            cert = data_dir / CERT_FILE
            done = run_chatctl(
                "send",
                f"tls://{server.host}:{server.port}",
                "self-signed",
                "--tls-ca",
                str(cert),
            )
            assert done.returncode == 0, done.stderr
    assert shown[0] == shown[1] == fingerprint((data_dir / CERT_FILE).read_bytes())
    for name in (CERT_FILE, KEY_FILE):
        assert stat.S_IMODE(os.stat(data_dir / name).st_mode) == 0o600


def test_self_signed_in_memory_is_for_this_run_only(tmp_path: Path) -> None:
    with serve_process("--tls-self-signed", "--data", ":memory:") as server:
        line = server.wait_for_line(r"speaking TLS only: (.*)").group(1)
        assert "in memory for this run only" in line and "SHA256:" in line
        done = run_chatctl("send", f"{server.host}:{server.port}", "plain")
        assert done.returncode == 5 and "this port speaks TLS" in done.stderr


def test_bad_tls_options_are_one_line(tmp_path: Path, pki: dict[str, str]) -> None:
    done = run_chatctl("serve", "--port", "0", "--tls-cert", pki["cert"])
    assert done.returncode == 1 and done.stderr.strip() == (
        "chatctl: --tls-cert and --tls-key go together"
    )
    done = run_chatctl("serve", "--port", "0", "--tls-cert", pki["key"], "--tls-key", pki["key"])
    assert done.returncode == 1
    assert done.stderr.startswith("chatctl: cannot use the TLS certificate")
    assert len(done.stderr.strip().splitlines()) == 1


def _transport_pair(pki: dict[str, str]) -> tuple[TlsTransport, ssl.SSLSocket]:
    """A server TlsTransport and a blocking TLS client socket over a socketpair with small
    buffers, the handshake done (the server side pumped here, the client in a thread)."""
    server_sock, client_sock = socket.socketpair()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport = TlsTransport(server_sock, server_context(Path(pki["cert"]), Path(pki["key"])))
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # after its own setting
    context = ssl.create_default_context(cafile=pki["ca"])
    client = context.wrap_socket(
        client_sock, server_hostname="localhost", do_handshake_on_connect=False
    )
    client.settimeout(10)
    shaken = threading.Thread(target=client.do_handshake, daemon=True)
    shaken.start()
    buf = bytearray(256 * 1024)
    deadline = time.monotonic() + 10
    while shaken.is_alive() or not transport.established:
        assert time.monotonic() < deadline, "no TLS handshake"
        select.select([server_sock], [], [], 0.05)
        try:
            transport.recv_into(buf, len(buf))
        except BlockingIOError:
            pass
    return transport, client


def test_unsent_ciphertext_is_a_backlog_until_the_kernel_takes_it(pki: dict[str, str]) -> None:
    transport, client = _transport_pair(pki)
    try:
        sent = b""
        while True:  # until the kernel refuses some of what was encrypted
            chunk = os.urandom(WRITE_CHUNK)
            taken = transport.send(chunk)
            sent += chunk[:taken]
            if transport.backlog:
                break
            assert taken == len(chunk) and len(sent) < 64 * 1024 * 1024
        assert transport.send(b"more") == 0  # nothing new while ciphertext waits
        received = b""
        client.settimeout(0.05)
        deadline = time.monotonic() + 10
        while len(received) < len(sent):  # the client reads; the backlog is flushed by send
            assert time.monotonic() < deadline, "the backlog was never sent"
            try:
                received += client.recv(1 << 20)
            except TimeoutError:  # the rest of a record is still in the backlog
                pass
            transport.send(b"")
        assert received == sent and transport.backlog == 0
    finally:
        client.close()
        transport.close()


def test_one_read_returns_all_the_plaintext_it_decrypted(pki: dict[str, str]) -> None:
    transport, client = _transport_pair(pki)
    try:
        payload = os.urandom(200_000)
        writer = threading.Thread(target=client.sendall, args=(payload,), daemon=True)
        writer.start()
        buf = bytearray(256 * 1024)
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < len(payload):
            assert time.monotonic() < deadline
            select.select([transport.sock], [], [], 0.05)
            try:
                n = transport.recv_into(buf, len(buf))
            except BlockingIOError:
                continue
            got += bytes(buf[:n])
            assert transport._obj.pending() == 0  # nothing left the socket will not signal
        assert got == payload
        writer.join(10)
    finally:
        client.close()
        transport.close()
