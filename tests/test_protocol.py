"""The sans-IO protocol: examples for every frame, then properties in the style of h11."""

from __future__ import annotations

import json
import struct

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatctl import protocol as p
from tests.strategies import (
    ALL_FRAME_CLASSES,
    any_event,
    client_ready_events,
    events_of,
    server_ready_events,
)

WELCOME = p.Welcome(
    protocol=1,
    server="chatctl",
    version="0.1.0",
    nick="alice",
    token="t0k",
    limits={"max_frame": 65536},
)


def ready_pair() -> tuple[p.Connection, p.Connection]:
    """A client and a server connection that have completed the handshake."""
    client, server = p.Connection(p.Role.CLIENT), p.Connection(p.Role.SERVER)
    server.receive_data(client.send(p.Hello(version=1, nick="alice")))
    assert isinstance(server.next_event(), p.Hello)
    client.receive_data(server.send(WELCOME))
    assert client.next_event() == WELCOME
    assert client.state is server.state is p.State.READY
    return client, server


def drain(conn: p.Connection) -> list[p.Event]:
    out: list[p.Event] = []
    while True:
        event = conn.next_event()
        if event is p.NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, p.ConnectionClosed):
            return out


def frame(frame_type: int, body: bytes, *, magic: bytes = b"CC", flags: int = 0) -> bytes:
    return struct.pack("!2sBBI", magic, frame_type, flags, len(body)) + body


# --- Examples ---------------------------------------------------------------------------------

EXAMPLES: list[p.Event] = [
    p.Hello(version=1, nick="alice", token="abc"),
    p.Join(room="lobby"),
    p.Join(room="dev", after=41),
    p.Part(room="dev", reason="lunch"),
    p.Say(msg_id="1", room="lobby", text="héllo"),
    p.Say(msg_id="2", room="lobby", text="waves", action=True),
    p.Tell(msg_id="3", to="bob", text="psst"),
    p.ChangeNick(nick="alicia"),
    p.Who(room="lobby"),
    p.ListRooms(),
    p.History(room="lobby", after=10, limit=5),
    p.Hello(version=1, nick="alice", account="alice", password="correct horse"),
    p.Register(password="correct horse"),
    p.Moderate(room="hr", action="invite", target="bob"),
    p.Moderate(room="hr", action="topic", text="pay rises"),
    p.Notice(kind="kicked", nick="alice", ts=6, room="hr", target="bob", reason="spam"),
    p.Members(room="hr", nicks=["alice"], topic="pay", private=True, owner="alice", ops=["carol"]),
    p.Bye(code=p.ErrorCode.SERVER_SHUTDOWN, reason="restart"),
    p.Ping(token=7),
    p.Pong(token=7),
    WELCOME,
    p.Message(room="lobby", seq=42, ts=1764000000000, sender="bob", text="hi"),
    p.DirectMessage(sender="bob", to="alice", ts=1, text="psst"),
    p.Notice(kind="renamed", nick="alice", new_nick="alicia", ts=5),
    p.Ack(msg_id="1", ts=9, recipients=3, room="lobby", seq=43),
    p.Members(room="lobby", nicks=["alice", "bob"]),
    p.RoomList(rooms={"lobby": 2}),
    p.Gap(room="lobby", first=120, last=180),
    p.HistoryEnd(room="lobby", head=200),
    p.Error(code=p.ErrorCode.NOT_IN_ROOM, message="not in room dev", msg_id="4"),
]


def test_every_frame_type_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(p.FRAME_TYPES.values())


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_example_round_trips(event: p.Event) -> None:
    data = p.encode(event)
    magic, frame_type, flags, length = struct.unpack_from("!2sBBI", data)
    assert (magic, frame_type, flags, length) == (b"CC", event.TYPE, 0, len(data) - 8)
    assert json.loads(data[8:]) is not None
    assert p.decode_body(frame_type, data[8:]) == event


def test_defaults_are_left_out_and_restored() -> None:
    data = p.encode(p.Join(room="lobby"))
    assert data[8:] == b'{"room":"lobby"}'
    assert p.decode_body(p.Join.TYPE, data[8:]) == p.Join(room="lobby", history=None, after=None)


def test_unknown_fields_are_ignored() -> None:
    body = b'{"room":"lobby","colour":"blue","future":[1,2]}'
    assert p.decode_body(p.Who.TYPE, body) == p.Who(room="lobby")


@pytest.mark.parametrize(
    ("frame_type", "body", "needle"),
    [
        (0x7E, b"{}", "unknown frame type"),
        (p.Who.TYPE, b"", "not valid JSON"),
        (p.Who.TYPE, b"[]", "not a JSON object"),
        (p.Who.TYPE, b"{}", "lacks the field 'room'"),
        (p.Who.TYPE, b'{"room":5}', "must be a string"),
        (p.Who.TYPE, b'{"room":"\xff"}', "not valid UTF-8"),
        (p.Who.TYPE, b'{"room":"\\ud800"}', "not valid Unicode"),
        (p.Who.TYPE, "\ufeff{}".encode("utf-16"), "not valid UTF-8"),
        (p.Ping.TYPE, b'{"token":-1}', "must be an integer"),
        (p.Ping.TYPE, b'{"token":true}', "must be an integer"),
        (p.Ping.TYPE, b'{"token":1.5}', "must be an integer"),
        (p.Ping.TYPE, b'{"token":NaN}', "must be an integer"),
        (p.Ping.TYPE, b'{"token":' + b"9" * 5000 + b"}", "not valid JSON"),
        (p.Ping.TYPE, b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (p.Members.TYPE, b'{"room":"a","nicks":["b",3]}', "list of strings"),
        (p.RoomList.TYPE, b'{"rooms":{"a":"b"}}', "object of integers"),
    ],
)
def test_invalid_bodies_are_remote_errors(frame_type: int, body: bytes, needle: str) -> None:
    with pytest.raises(p.RemoteProtocolError, match=needle):
        p.decode_body(frame_type, body)


def test_bad_magic_fails_on_the_first_byte() -> None:
    server = p.Connection(p.Role.SERVER)
    server.receive_data(b"G")
    with pytest.raises(p.RemoteProtocolError, match="bad magic"):
        server.next_event()


def test_nonzero_flags_are_rejected() -> None:
    server = p.Connection(p.Role.SERVER)
    server.receive_data(frame(p.Hello.TYPE, b'{"version":1,"nick":"a"}', flags=1))
    with pytest.raises(p.RemoteProtocolError, match="flags"):
        server.next_event()


def test_oversized_length_is_rejected_before_the_body_arrives() -> None:
    server = p.Connection(p.Role.SERVER, max_frame_size=1024)
    server.receive_data(struct.pack("!2sBBI", b"CC", p.Say.TYPE, 0, 1025))
    with pytest.raises(p.RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == p.ErrorCode.FRAME_TOO_LARGE
    # Once broken, the connection buffers nothing more and keeps failing the same way.
    server.receive_data(b"x" * 4096)
    assert server.buffered == 0
    with pytest.raises(p.RemoteProtocolError):
        server.next_event()


def test_frame_at_the_limit_is_accepted() -> None:
    body = b'{"room":"' + b"r" * (1024 - 11) + b'"}'
    assert len(body) == 1024
    server = p.Connection(p.Role.SERVER, max_frame_size=1024)
    server.receive_data(p.Connection(p.Role.CLIENT).send(p.Hello(version=1, nick="a")))
    server.next_event()
    server.send(WELCOME)
    server.receive_data(frame(p.Who.TYPE, body))
    assert server.next_event() == p.Who(room="r" * 1013)


def test_max_frame_size_is_bounded() -> None:
    with pytest.raises(p.LocalProtocolError):
        p.Connection(p.Role.SERVER, max_frame_size=p.MAX_FRAME_SIZE_CEILING + 1)


def test_client_adopts_the_servers_announced_frame_limit() -> None:
    client = p.Connection(p.Role.CLIENT)
    client.send(p.Hello(version=1, nick="a"))
    client.receive_data(p.encode(msgspec.structs.replace(WELCOME, limits={"max_frame": 1 << 20})))
    client.next_event()
    assert client.max_frame_size == 1 << 20


def test_clean_eof_gives_connection_closed_then_need_data() -> None:
    _client, server = ready_pair()
    server.receive_data(b"")
    assert isinstance(server.next_event(), p.ConnectionClosed)
    assert server.state is p.State.CLOSED
    assert server.next_event() is p.NEED_DATA


def test_eof_mid_frame_is_an_error() -> None:
    client, server = ready_pair()
    server.receive_data(client.send(p.Who(room="lobby"))[:-1])
    assert server.next_event() is p.NEED_DATA
    server.receive_data(b"")
    with pytest.raises(p.TruncatedStream, match="middle of a frame"):
        server.next_event()


def test_a_client_cannot_speak_as_the_server() -> None:
    """Message frames carry the sender; only the server may send them."""
    client, server = ready_pair()
    forged = p.encode(p.Message(room="lobby", seq=1, ts=1, sender="root", text="hi"))
    server.receive_data(forged)
    with pytest.raises(p.RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == p.ErrorCode.UNEXPECTED_FRAME
    with pytest.raises(p.LocalProtocolError):
        client.send(p.Message(room="lobby", seq=1, ts=1, sender="root", text="hi"))


def test_nothing_before_hello() -> None:
    server = p.Connection(p.Role.SERVER)
    server.receive_data(p.encode(p.Join(room="lobby")))
    with pytest.raises(p.RemoteProtocolError, match="state start"):
        server.next_event()


def test_nothing_after_bye() -> None:
    client, server = ready_pair()
    server.receive_data(client.send(p.Bye()) + p.encode(p.Who(room="x")))
    assert server.next_event() == p.Bye()
    assert server.state is p.State.CLOSED
    with pytest.raises(p.RemoteProtocolError, match="after the connection closed"):
        server.next_event()
    with pytest.raises(p.LocalProtocolError):
        client.send(p.Who(room="x"))


def test_encode_rejects_invalid_field_values() -> None:
    with pytest.raises(p.LocalProtocolError, match="must be an integer"):
        p.encode(p.Ping(token=-1))
    with pytest.raises(p.LocalProtocolError, match="not valid Unicode"):
        p.encode(p.Who(room="\ud800"))
    with pytest.raises(p.LocalProtocolError, match="not a frame"):
        p.encode(p.ConnectionClosed())


# --- Properties ---------------------------------------------------------------------------------


@given(any_event)
@example(p.Say(msg_id="", room="", text="\x00\n\u2028"))
@example(p.RoomList(rooms={"": 0}))
def test_property_encode_decode_round_trips(event: p.Event) -> None:
    data = p.encode(event)
    assert p.decode_body(data[2], data[8:]) == event


@pytest.mark.parametrize("cls", ALL_FRAME_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_property_round_trip_per_frame_type(cls: type[p.Event], data: st.DataObject) -> None:
    event = data.draw(events_of(cls))
    encoded = p.encode(event)
    assert encoded[2] == cls.TYPE
    assert p.decode_body(cls.TYPE, encoded[8:]) == event


def _chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    return [piece for piece in pieces if piece]  # an empty chunk would mean end of stream


@given(st.lists(client_ready_events, max_size=8), st.lists(st.integers(min_value=0), max_size=20))
def test_property_server_sees_the_same_events_however_chunked(
    events: list[p.Event], cuts: list[int]
) -> None:
    client, server = ready_pair()
    stream = b"".join(client.send(e) for e in events)
    received: list[p.Event] = []
    for chunk in _chunked(stream, cuts):
        server.receive_data(chunk)
        received.extend(drain(server))
    assert received == events


@given(st.lists(server_ready_events, max_size=8))
def test_property_client_sees_the_same_events_byte_by_byte(events: list[p.Event]) -> None:
    client, server = ready_pair()
    stream = b"".join(server.send(e) for e in events)
    received: list[p.Event] = []
    for i in range(len(stream)):
        client.receive_data(stream[i : i + 1])
        received.extend(drain(client))
    assert received == events


def _mutated_stream() -> st.SearchStrategy[bytes]:
    """Mostly-valid streams with damage: the interesting garbage is near-valid."""
    frames = st.lists(any_event.map(p.encode), max_size=4).map(b"".join)
    damage = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4)

    def apply(stream: bytes, edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(stream)
        for pos, value in edits:
            if out:
                out[pos % len(out)] = value
        return bytes(out)

    return st.one_of(st.binary(max_size=200), st.builds(apply, frames, damage))


@given(_mutated_stream(), st.sampled_from(list(p.Role)), st.booleans())
@example(b"CC\x01\x00\x00\x00\x00\x02{}", p.Role.SERVER, True)
@example(b"CC\x01\x00\xff\xff\xff\xff", p.Role.SERVER, False)
def test_property_garbage_yields_events_or_remote_errors(
    data: bytes, role: p.Role, eof: bool
) -> None:
    conn = p.Connection(role, max_frame_size=1024)
    if role is p.Role.CLIENT:
        conn.send(p.Hello(version=1, nick="a"))
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    try:
        for _ in range(len(data) + 2):
            event = conn.next_event()
            if event is p.NEED_DATA:
                break
            assert isinstance(event, p.Event)
    except p.RemoteProtocolError as exc:
        assert isinstance(exc.code, p.ErrorCode)


def _frames_a_client_sends() -> st.SearchStrategy[bytes]:
    """A ready client's frames, Says without a rid most of all (the ones next_says takes),
    sometimes damaged: a byte changed anywhere (header or body), or a frame cut short."""
    say = st.builds(
        p.Say,
        msg_id=st.text(max_size=8),
        room=st.sampled_from(["lobby", "dev", "bad room", ""]),
        text=st.text(max_size=12),  # non-ASCII too
        action=st.booleans(),
    )
    frame = st.one_of(say, say, say, client_ready_events, st.just(p.Bye(reason="done")))
    frames = st.lists(frame.map(p.encode), max_size=10).map(b"".join)
    damage = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=2)

    def apply(stream: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
        out = bytearray(stream)
        for pos, value in edits:
            if out:
                out[pos % len(out)] = value
        return bytes(out[: len(out) - cut % 4])

    return st.builds(apply, frames, damage, st.integers(min_value=0))


def _taken(conn: p.Connection, chunks: list[bytes], says_first: bool) -> list[object]:
    """What `conn` yields from `chunks`: its events, then the error that ended them (its
    type, text and code), through next_event alone or next_says before each next_event."""
    out: list[object] = []
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                if says_first:
                    says = conn.next_says(3)
                    if says:
                        assert len(says) <= 3 and not any(say.rid for say in says)
                        out.extend(says)
                        continue
                event = conn.next_event()
                if event is p.NEED_DATA:
                    break
                out.append(event)
    except p.RemoteProtocolError as exc:
        out.append((type(exc), str(exc), exc.code))
    return out


_BAD_UTF8_SAY = b'{"msg_id":"a","room":"lobby","text":"hi","x":"\xff"}'  # in a skipped field


@given(_frames_a_client_sends(), st.lists(st.integers(min_value=0), max_size=6))
@example(p.HEADER.pack(p.MAGIC, p.Say.TYPE, 0, len(_BAD_UTF8_SAY)) + _BAD_UTF8_SAY, [])
def test_property_next_says_takes_what_next_event_would(data: bytes, cuts: list[int]) -> None:
    """The server takes runs of Says with next_says: the same events, in the same order, and
    the same error at the same point as next_event alone, however the bytes arrive."""
    chunks = _chunked(data, cuts)
    _, one_by_one = ready_pair()
    _, in_runs = ready_pair()
    assert _taken(in_runs, chunks, True) == _taken(one_by_one, chunks, False)
    assert in_runs.state is one_by_one.state


def test_next_says_leaves_a_say_with_a_rid_and_other_frames_to_next_event() -> None:
    _, server = ready_pair()
    plain = [p.Say(msg_id=str(i), room="lobby", text="hi") for i in range(3)]
    asked = p.Say(msg_id="3", room="lobby", text="hi", rid="r1")
    server.receive_data(b"".join(map(p.encode, [*plain, asked, p.Ping(token=7), *plain])))
    assert server.next_says(2) == plain[:2]
    assert server.next_says(5) == plain[2:]
    assert server.next_says(5) == []
    assert server.next_event() == asked
    assert server.next_says(5) == []
    assert server.next_event() == p.Ping(token=7)
    assert server.next_says(5) == plain


@given(st.integers(min_value=1025, max_value=2**32 - 1), st.sampled_from(ALL_FRAME_CLASSES))
def test_property_oversized_frames_fail_on_the_header(length: int, cls: type[p.Event]) -> None:
    server = p.Connection(p.Role.SERVER, max_frame_size=1024)
    server.receive_data(struct.pack("!2sBBI", b"CC", cls.TYPE, 0, length))
    with pytest.raises(p.RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == p.ErrorCode.FRAME_TOO_LARGE
