"""A slow consumer's stream ends at a frame boundary, then `Bye 302 SLOW_CONSUMER`: when the
server cuts it off with part of a frame already sent, it sends the rest of that frame (and
nothing else of the queue) before the Bye. Over real sockets, plain and TLS, for both limits
(one connection's `max_output`, and `total_output` shedding the biggest queues)."""

from __future__ import annotations

import io
import ssl
import time
from typing import Any

import pytest

from chatctl.protocol import (
    Bye,
    ConnectionClosed,
    ErrorCode,
    Event,
    HistoryEnd,
    Join,
    Members,
    Message,
    Notice,
    TruncatedStream,
)
from chatctl.server.loop import Server
from chatctl.server.peer import Peer
from tests.servers import Client, server_instance

ROOM = "lobby"
# The server joins queued items up to WRITE_CHUNK (256 KiB) for one send. Plain TCP: the
# kernel takes part of that, cutting a frame of 100 KB as it goes. TLS takes a whole chunk
# of plaintext, then nothing while its ciphertext waits for the kernel: frames bigger than
# a chunk are what it cuts.
PLAIN_TEXT, TLS_TEXT = 100_000, 400_000
SETTINGS: dict[str, Any] = {"max_frame": 4 << 20, "max_text": 500_000, "rate": 0}


def limits(limit: str, text_size: int) -> tuple[dict[str, int], str]:
    """Settings under which a reader that stopped reading is a slow consumer a few messages
    later, and what the log says of it: the one-connection limit, or the total one (with a
    queue limit that never trips first)."""
    if limit == "max_output":
        return {"max_output": 3 * text_size}, f"over the limit of {3 * text_size}"
    total = 10 * text_size
    return (
        {"max_output": 50 * text_size, "total_output": total},
        f"the server's output is over its limit of {total} bytes",
    )


def record_cuts(monkeypatch: pytest.MonkeyPatch, server: Server) -> list[tuple[str, int]]:
    """(nick, bytes of the frame in flight) for each slow consumer the server cuts off."""
    cuts: list[tuple[str, int]] = []
    cut = server._slow_consumer

    def spy(peer: Peer, *, shed: bool = False) -> None:
        cuts.append((server._nick(peer), peer.frame_left))
        cut(peer, shed=shed)

    monkeypatch.setattr(server, "_slow_consumer", spy)
    return cuts


def flood_until_dropped(alice: Client, bob: Client, nick: str, size: int) -> list[str]:
    """Bob says messages of `size` bytes until alice hears `nick` dropped; what he said."""
    said: list[str] = []
    deadline = time.monotonic() + 30
    while True:
        text = f"{len(said):04d}" + chr(65 + len(said) % 26) * (size - 4)
        bob.say(ROOM, text)
        said.append(text)
        assert alice.wait_for(Message, lambda m: m.sender == "bob").text == text
        dropped = [e for e in alice.seen if type(e) is Notice and e.kind == "dropped"]
        if dropped:
            assert [(n.nick, n.reason) for n in dropped] == [(nick, "slow consumer")]
            return said
        assert time.monotonic() < deadline, f"{nick} was never dropped"


def read_to_the_end(client: Client) -> list[Event]:
    """Every event until the server closes the stream; a stream cut inside a frame fails."""
    events: list[Event] = []
    deadline = time.monotonic() + 30
    while True:
        try:
            event = client.recv(max(deadline - time.monotonic(), 0.001))
        except TruncatedStream as exc:
            pytest.fail(f"the stream ended inside a frame after {len(events)} events: {exc}")
        if type(event) is ConnectionClosed:
            return events
        events.append(event)


def assert_whole_frames_then_bye(events: list[Event], said: list[str]) -> None:
    *before, bye = events
    assert type(bye) is Bye and bye.code == ErrorCode.SLOW_CONSUMER, bye
    assert bye.reason == "slow consumer"
    assert {type(e) for e in before} <= {HistoryEnd, Members, Notice, Message}
    # Whole messages, in order, with no gap: the queue was dropped only after the last one.
    texts = [e.text for e in before if type(e) is Message]
    assert texts == said[: len(texts)]


def sleeper_cut_off(
    monkeypatch: pytest.MonkeyPatch,
    limit: str,
    size: int,
    tls: ssl.SSLContext | None = None,
    **tls_files: str,
) -> None:
    overrides, logged = limits(limit, size)
    config: dict[str, Any] = {**SETTINGS, **overrides, **tls_files}
    with server_instance(**config) as (server, host, port):
        cuts = record_cuts(monkeypatch, server)
        alice = Client.connect(host, port, "alice", ROOM, tls=tls)
        bob = Client.connect(host, port, "bob", ROOM, tls=tls)
        sleeper = Client(host, port, tls=tls, rcvbuf=4096)
        sleeper.hello("sleeper")
        sleeper.send(Join(room=ROOM))  # and reads nothing more until it has been dropped
        alice.wait_for(Notice, lambda n: n.nick == "sleeper" and n.kind == "joined")
        said = flood_until_dropped(alice, bob, "sleeper", size)
        # It reads again within the close grace: the frames the kernel holds, the rest of
        # the one in flight, the Bye, the end of the stream.
        assert_whole_frames_then_bye(read_to_the_end(sleeper), said)
        ((nick, kept),) = cuts
        assert nick == "sleeper"
        assert 0 < kept <= size + 1024  # cut inside a frame, and only that one kept
        assert bob.say(ROOM, "still served").recipients == 1
        stream = server.journal.stream
        assert isinstance(stream, io.StringIO)
        assert logged in stream.getvalue()


@pytest.mark.parametrize("limit", ["max_output", "total_output"])
def test_a_slow_consumer_cut_mid_frame_gets_that_frame_then_bye(
    monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    sleeper_cut_off(monkeypatch, limit, PLAIN_TEXT)


@pytest.mark.parametrize("limit", ["max_output", "total_output"])
def test_a_slow_consumer_cut_mid_frame_gets_that_frame_then_bye_over_tls(
    monkeypatch: pytest.MonkeyPatch, limit: str, pki: dict[str, str]
) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    sleeper_cut_off(monkeypatch, limit, TLS_TEXT, context, tls_cert=pki["cert"], tls_key=pki["key"])
