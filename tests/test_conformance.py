"""Conformance: docs/protocol.md, exercised against a real server over real TCP sockets.

Every requirement of the document (each sentence with a MUST or MUST NOT) and every example
(the ```frame blocks and the §10 session transcript) has a test here that sends real bytes to
a real server (tests/servers.py), or, for what only a client must do, real bytes from a
scripted server to the reference client. `MUSTS` maps each requirement to its tests, and
`test_every_must_of_the_document_has_a_test` fails when the document gains a MUST without
one. Where the server does not (yet) do what the document says, the test is marked
`xfail(strict=True)` with the reason.

Nothing here sleeps to synchronise: every wait is for a frame (or the end of a stream),
with a deadline; "nothing else came" is shown by a Ping sentinel, which the server answers in
order after everything before it (§6.7).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chatctl import __version__
from chatctl import protocol as p
from chatctl.client.link import InsecureLink, open_link
from chatctl.protocol import (
    HEADER,
    MAGIC,
    Ack,
    Bye,
    ChangeNick,
    ConnectionClosed,
    DirectMessage,
    Error,
    ErrorCode,
    Event,
    Gap,
    Hello,
    History,
    HistoryEnd,
    Join,
    ListRooms,
    Members,
    Message,
    Moderate,
    Notice,
    Part,
    Ping,
    Pong,
    Register,
    RoomList,
    Say,
    Tell,
    Welcome,
    Who,
    encode,
)
from chatctl.ui.render import sanitize
from tests.servers import Client, register, running_server, server_instance
from tests.test_protocol_doc import examples, parse_hexdump

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
TEXT = DOC.read_text(encoding="utf-8")
ROOM = "lobby"
PASSWORD = "correct horse"
WHITE_SPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]
# A client address other than 127.0.0.1, for rate limits (they are per address).
ELSEWHERE = "127.0.0.2"
# A non-loopback address of this machine, if it has one: passwords may not go there.


def _outside_address() -> str | None:
    """The local address of the default route (a UDP "connect" sends nothing), if any."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("198.51.100.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


OUTSIDE = _outside_address()


# -- helpers -------------------------------------------------------------------------------


def raw_frame(kind: int, body: bytes, *, flags: int = 0, magic: bytes = MAGIC) -> bytes:
    return struct.pack("!2sBBI", magic, kind, flags, len(body)) + body


def json_frame(frame_type: int, /, **fields: Any) -> bytes:
    """A frame as §11's snippet makes it: json.dumps with its default ensure_ascii."""
    return raw_frame(frame_type, json.dumps(fields, separators=(",", ":")).encode())


def hello_raw(client: Client, nick: str, **fields: Any) -> bytes:
    """The Hello's bytes, the client's state moved as if it had sent them (for pipelining:
    the reference Connection would refuse to send a request before the Welcome)."""
    hello = Hello(version=1, nick=nick, **fields)
    client.conn.sent(hello)
    return encode(hello)


_sentinels = iter(range(1_000_000, 2_000_000))


def until_sentinel(client: Client, timeout: float = 10.0) -> list[Event]:
    """Everything the server sends `client` before its answer to a Ping sent now: all the
    answers to the requests sent before it (the server answers in order, §6.7)."""
    token = next(_sentinels)
    client.send(Ping(token=token))
    got: list[Event] = []
    while True:
        event = client.recv(timeout)
        if type(event) is Pong and event.token == token:
            return got
        if type(event) is ConnectionClosed:
            raise ConnectionError(f"closed before the sentinel: {got}")
        got.append(event)


def answers(client: Client, request: Event) -> list[Event]:
    """The frames that follow `request` up to the sentinel."""
    client.send(request)
    return until_sentinel(client)


def closed_with(client: Client) -> tuple[Bye | None, list[Event]]:
    """The Bye the server closed with (if any), and every frame before it."""
    before = len(client.seen)
    bye = client.wait_closed()
    return bye, client.seen[before:]


def pair(host: str, port: int, room: str = ROOM) -> tuple[Client, Client]:
    """alice and bob in `room`, with nothing left to read."""
    alice = Client.connect(host, port, "alice", room)
    bob = Client.connect(host, port, "bob", room)
    until_sentinel(alice)
    return alice, bob


@contextmanager
def scripted_server(script: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A one-connection "server" on 127.0.0.1 that runs `script` on the accepted socket, to
    show what a client must do with bytes only a server sends."""
    listener = socket.create_server(("127.0.0.1", 0))
    failures: list[BaseException] = []

    def run() -> None:
        try:
            listener.settimeout(10)
            conn, _ = listener.accept()
            with conn:
                script(conn)
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        thread.join(timeout=10)
        listener.close()
    if failures:
        raise failures[0]


def read_frame(sock: socket.socket) -> bytes:
    """One whole frame from `sock`."""
    data = b""
    while len(data) < 8 or len(data) < 8 + HEADER.unpack_from(data)[3]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the client closed")
        data += chunk
    return data


def types(events: list[Event]) -> list[type[Event]]:
    return [type(e) for e in events]


# -- §2, §3: framing -----------------------------------------------------------------------

SAY = Say.TYPE
MALFORMED: list[tuple[str, bytes, int]] = [
    ("bad magic", raw_frame(SAY, b"{}", magic=b"XX"), ErrorCode.MALFORMED_FRAME),
    ("http request", b"GET / HTTP/1.1\r\n\r\n", ErrorCode.MALFORMED_FRAME),
    ("flags 1", raw_frame(Who.TYPE, b'{"room":"a"}', flags=1), ErrorCode.MALFORMED_FRAME),
    ("flags 0x80", raw_frame(Who.TYPE, b'{"room":"a"}', flags=0x80), ErrorCode.MALFORMED_FRAME),
    ("oversize", HEADER.pack(MAGIC, SAY, 0, 65537), ErrorCode.FRAME_TOO_LARGE),
    ("unknown type 0x7e", raw_frame(0x7E, b"{}"), ErrorCode.UNKNOWN_FRAME_TYPE),
    ("unknown type 0xff", raw_frame(0xFF, b"{}"), ErrorCode.UNKNOWN_FRAME_TYPE),
    ("bad json", raw_frame(Who.TYPE, b"{not json"), ErrorCode.MALFORMED_FRAME),
    ("bad utf-8", raw_frame(Who.TYPE, b'{"room":"\xff\xfe"}'), ErrorCode.MALFORMED_FRAME),
    ("utf-8 bom", raw_frame(Who.TYPE, b'\xef\xbb\xbf{"room":"a"}'), ErrorCode.MALFORMED_FRAME),
    ("not an object", raw_frame(Who.TYPE, b'["a"]'), ErrorCode.MALFORMED_FRAME),
    ("lone surrogate", raw_frame(Who.TYPE, b'{"room":"\\ud800"}'), ErrorCode.MALFORMED_FRAME),
    ("missing field", raw_frame(SAY, b'{"msg_id":"1","room":"a"}'), ErrorCode.MALFORMED_FRAME),
    ("str as int", raw_frame(Join.TYPE, b'{"room":"a","history":"5"}'), ErrorCode.MALFORMED_FRAME),
    ("int as str", raw_frame(Who.TYPE, b'{"room":5}'), ErrorCode.MALFORMED_FRAME),
    ("bool as int", raw_frame(Join.TYPE, b'{"room":"a","after":true}'), ErrorCode.MALFORMED_FRAME),
    ("negative int", raw_frame(Join.TYPE, b'{"room":"a","after":-1}'), ErrorCode.MALFORMED_FRAME),
    ("fraction", raw_frame(Join.TYPE, b'{"room":"a","after":1.5}'), ErrorCode.MALFORMED_FRAME),
    ("int over 2^63-1", raw_frame(Ping.TYPE, b'{"token":9223372036854775808}'), 100),
    ("null as str", raw_frame(Who.TYPE, b'{"room":null}'), ErrorCode.MALFORMED_FRAME),
    ("int as bool", raw_frame(SAY, b'{"msg_id":"1","room":"a","text":"x","action":1}'), 100),
    ("a second Hello", encode(Hello(version=1, nick="again")), ErrorCode.UNEXPECTED_FRAME),
    ("a server frame", encode(HistoryEnd(room="a", head=1)), ErrorCode.UNEXPECTED_FRAME),
]


@pytest.mark.parametrize(("bad", "code"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_frame_ends_the_connection_with_its_code(bad: bytes, code: int) -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        mallory = Client.connect(host, port, "mallory", ROOM)
        mallory.send_raw(bad)
        bye, before = closed_with(mallory)
        assert bye is not None and bye.code == code, (bye, before)
        # Only the sender is dropped; the room hears of it and goes on.
        dropped = alice.wait_for(Notice, lambda n: n.kind == "dropped")
        assert dropped.nick == "mallory"
        assert bob.say(ROOM, "still here").seq == 1


BEFORE_HELLO: list[tuple[str, bytes]] = [
    ("Join", encode(Join(room=ROOM))),
    ("Say", encode(Say(msg_id="1", room=ROOM, text="x"))),
    ("Ping", encode(Ping(token=1))),
    ("Pong", encode(Pong(token=1))),
    ("Welcome", encode(Welcome(protocol=1, server="x", version="1", nick="a", token="t"))),
]


@pytest.mark.parametrize("frame", [b for _, b in BEFORE_HELLO], ids=[n for n, _ in BEFORE_HELLO])
def test_a_frame_before_the_hello_is_unexpected(frame: bytes) -> None:
    with running_server(rate=0) as (host, port):
        client = Client(host, port)
        client.send_raw(frame)
        bye, before = closed_with(client)
        assert bye is not None and bye.code == ErrorCode.UNEXPECTED_FRAME
        assert before == []


def test_frames_split_down_to_one_byte_at_a_time_and_many_in_one_write() -> None:
    with running_server(rate=0) as (host, port):
        bob = Client.connect(host, port, "bob", ROOM)
        client = Client(host, port)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = hello_raw(client, "alice") + encode(Join(room=ROOM, rid="j"))
        for i in range(len(data)):  # one byte per send: the server must reassemble
            client.send_raw(data[i : i + 1])
        assert client.wait_for(Welcome).nick == "alice"
        client.wait_for(Members, lambda m: m.rid == "j")
        # And many frames in one write, answered one by one, in order.
        burst = b"".join(
            encode(Say(msg_id=f"b{i}", room=ROOM, text=f"burst {i}")) for i in range(50)
        )
        client.send_raw(burst)
        acks = [client.wait_for(Ack) for _ in range(50)]
        assert [a.msg_id for a in acks] == [f"b{i}" for i in range(50)]
        got = [bob.wait_for(Message) for _ in range(50)]
        assert [m.text for m in got] == [f"burst {i}" for i in range(50)]


def test_unknown_fields_are_ignored() -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        frame = json_frame(Say.TYPE, msg_id="u1", room=ROOM, text="hi", colour="red", v2={"a": 1})
        alice.send_raw(frame)
        assert alice.wait_for(Ack).msg_id == "u1"
        assert bob.wait_for(Message).text == "hi"
        hello = json_frame(Hello.TYPE, version=1, nick="carol", future=[1, 2])
        carol = Client(host, port)
        carol.conn.sent(Hello(version=1, nick="carol"))
        carol.send_raw(hello)
        assert carol.wait_for(Welcome).nick == "carol"


def test_json_escapes_and_utf8_are_both_accepted() -> None:
    text = "héllo ☃ 😀 \u200b"
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        escaped = json_frame(Say.TYPE, msg_id="e1", room=ROOM, text=text)
        assert b"\\u00e9" in escaped and b"\\ud83d\\ude00" in escaped  # what §11 sends
        alice.send_raw(escaped)
        alice.wait_for(Ack)
        assert bob.wait_for(Message).text == text
        alice.send_raw(encode(Say(msg_id="e2", room=ROOM, text=text)))  # raw UTF-8
        alice.wait_for(Ack)
        assert bob.wait_for(Message).text == text


# -- §4: the handshake ---------------------------------------------------------------------


def test_version_0_is_unsupported_and_a_higher_version_gets_1() -> None:
    with running_server(rate=0) as (host, port):
        old = Client(host, port)
        old.send(Hello(version=0, nick="old"))
        bye, _ = closed_with(old)
        assert bye is not None and bye.code == ErrorCode.UNSUPPORTED_VERSION
        new = Client(host, port)
        new.send(Hello(version=7, nick="new"))
        assert new.wait_for(Welcome).protocol == 1


@pytest.mark.parametrize(
    ("nick", "reason"),
    [
        ("", "a nick may not be empty"),
        ("9lives", "digit"),
        ("-dash", "digit or '-'"),
        ("a" * 33, "at most 32"),
        ("h\u00e9", "may not contain"),
        ("a b", "may not contain"),
    ],
)
def test_an_invalid_nick_in_the_hello_is_bye_200(nick: str, reason: str) -> None:
    with running_server(rate=0) as (host, port):
        client = Client(host, port)
        client.send_raw(hello_raw(client, nick) + encode(Join(room=ROOM)))  # pipelined: dropped
        bye, before = closed_with(client)
        assert bye is not None and bye.code == ErrorCode.INVALID_NICK
        assert reason in bye.reason
        assert before == []  # the pipelined Join was dropped with the connection


def test_a_nick_in_use_gets_a_variant_and_the_welcome_nick_is_the_one_used() -> None:
    with running_server(rate=0) as (host, port):
        _, bob = pair(host, port)
        second = Client(host, port)
        welcome = second.hello("Alice")
        assert welcome.nick == "Alice2"
        second.say(ROOM, "who am I")
        assert bob.wait_for(Message).sender == welcome.nick


def test_requests_pipelined_after_the_hello_are_served_in_order_after_the_welcome() -> None:
    with running_server(rate=0) as (host, port):
        bob = Client.connect(host, port, "bob", ROOM)
        client = Client(host, port)
        requests: list[Event] = [
            Join(room=ROOM, rid="1"),
            Say(msg_id="m", room=ROOM, text="early", rid="2"),
            Who(room=ROOM, rid="3"),
            ListRooms(rid="4"),
            History(room=ROOM, after=0, rid="5"),
            ChangeNick(nick="alicia", rid="6"),
            Part(room=ROOM, rid="7"),
        ]
        client.send_raw(hello_raw(client, "alice") + b"".join(encode(r) for r in requests))
        assert type(client.recv()) is Welcome  # first, before any answer
        got = until_sentinel(client)
        rids = [int(rid) for e in got if (rid := str(getattr(e, "rid", "")))]
        assert rids == sorted(rids) and set(rids) == set(range(1, 8)), got
        assert bob.wait_for(Message).text == "early"


def test_requests_pipelined_after_a_login_are_served_after_its_welcome() -> None:
    with running_server(rate=0, registration="open") as (host, port):
        register((host, port), "dana", PASSWORD)
        client = Client(host, port)
        pipelined = encode(Join(room=ROOM, rid="j")) + encode(Who(room=ROOM, rid="w"))
        client.send_raw(hello_raw(client, "", account="dana", password=PASSWORD) + pipelined)
        welcome = client.recv()
        assert type(welcome) is Welcome and welcome.nick == "dana" and welcome.account == "dana"
        got = until_sentinel(client)
        assert [e.rid for e in got if type(e) is Members] == ["j", "w"]


def test_a_login_with_a_password_refused_over_a_link_that_is_not_loopback() -> None:
    if OUTSIDE is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    # The server refuses a password that reached it in clear...
    with running_server(rate=0, hosts=(OUTSIDE,)) as (host, port):
        client = Client(host, port, source=OUTSIDE)
        client.send(Hello(version=1, nick="eve", account="eve", password=PASSWORD))
        bye, _ = closed_with(client)
        assert bye is not None and bye.code == ErrorCode.LOGIN_FAILED
        assert "only over TLS" in bye.reason
    # ...and the reference client never sends one there.
    received: list[bytes] = []

    def listen(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            while chunk := conn.recv(65536):
                received.append(chunk)

    listener = socket.create_server((OUTSIDE, 0))
    thread = threading.Thread(
        target=lambda: listen(listener.accept()[0]), daemon=True, name="outside"
    )
    listener.settimeout(10)
    thread.start()
    try:
        hello = Hello(version=1, nick="eve", account="eve", password=PASSWORD)
        with pytest.raises(InsecureLink):
            open_link(OUTSIDE, listener.getsockname()[1], hello, timeout=5)
        thread.join(timeout=10)
    finally:
        listener.close()
    assert b"".join(received) == b""


# -- §4.1, §6.6: tokens --------------------------------------------------------------------


def test_a_live_session_is_taken_over_with_its_nick_whatever_the_hello_asks() -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        alice.send(ChangeNick(nick="alicia"))
        alice.wait_for(Notice, lambda n: n.kind == "renamed")
        again = Client(host, port)
        welcome = again.hello("someone_else", token=alice.token)
        assert welcome.nick == "alicia" and welcome.token == alice.token  # survives ChangeNick
        bye, _ = closed_with(alice)
        assert bye is not None and bye.code == ErrorCode.REPLACED
        assert f"{again.sock.getsockname()[1]}" in bye.reason  # the new connection's address
        # The rooms came along, silently: no left or joined notice, and bob hears the message.
        again.say(ROOM, "still me")
        said = bob.wait_for(Message)
        assert (said.sender, said.text) == ("alicia", "still me")
        moves = [
            e for e in bob.seen if type(e) is Notice and e.kind in ("left", "joined", "dropped")
        ]
        assert [n.nick for n in moves] == ["bob"]  # bob's own join only


def test_an_ended_session_keeps_its_token_and_takes_the_nick_asked_for() -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        first = alice.say(ROOM, "once", msg_id="r1")
        bob.wait_for(Message)
        alice.bye()
        alice.wait_closed()
        again = Client(host, port)
        welcome = again.hello("carol", token=alice.token)
        assert welcome.token == alice.token and welcome.nick == "carol"
        # Its resend is recognised: acknowledged again, not delivered again.
        resent = again.say(ROOM, "once", msg_id="r1")
        assert (resent.seq, resent.ts) == (first.seq, first.ts)
        assert [e for e in until_sentinel(bob) if type(e) is Message] == []


@pytest.mark.parametrize(
    "token", ["garbage", "A" * 38, "not ascii ✓" * 4, "a-token-of-the-wrong-length"]
)
def test_a_token_the_server_did_not_make_starts_a_new_session(token: str) -> None:
    with running_server(rate=0) as (host, port):
        client = Client(host, port)
        welcome = client.hello("zed", token=token)
        assert welcome.nick == "zed" and welcome.token != token and len(welcome.token) == 38


def test_another_accounts_token_starts_a_new_session() -> None:
    with running_server(rate=0, registration="open") as (host, port):
        register((host, port), "dana", PASSWORD)
        register((host, port), "erin", PASSWORD)
        dana = Client(host, port)
        dana_token = dana.hello("", account="dana", password=PASSWORD).token
        erin = Client(host, port)
        welcome = erin.hello("", token=dana_token, account="erin", password=PASSWORD)
        assert welcome.account == "erin" and welcome.token != dana_token
        guest = Client(host, port)
        assert guest.hello("guest1", token=dana_token).token != dana_token
        assert until_sentinel(dana) == []  # not taken over


# -- §5.1: Ping and Pong -------------------------------------------------------------------


def test_ping_is_answered_with_its_token_and_the_server_pings_a_silent_client() -> None:
    with running_server(rate=0, ping_interval=0.2, idle_timeout=30) as (host, port):
        client = Client.connect(host, port, "alice")
        for token in (0, 7, 2**63 - 1):
            client.send(Ping(token=token))
            assert client.wait_for(Pong) == Pong(token=token)
        ping = client.wait_for(Ping, timeout=5)  # silent for ping_interval
        client.send(Pong(token=ping.token))
        assert until_sentinel(client) == []


# -- §5.2, §6.7: every request's answer carries its rid ------------------------------------

REQUESTS: list[tuple[str, Event, tuple[type[Event], ...]]] = [
    ("join", Join(room="r", rid="q"), (Notice, HistoryEnd, Members)),
    ("join again", Join(room=ROOM, rid="q"), (Message, HistoryEnd, Members)),
    ("join bad room", Join(room="bad room!", rid="q"), (Error,)),
    ("part", Part(room=ROOM, rid="q"), (Notice,)),
    ("part not in room", Part(room="nowhere", rid="q"), (Error,)),
    ("say", Say(msg_id="s1", room=ROOM, text="hi", rid="q"), (Ack,)),
    ("say empty", Say(msg_id="s2", room=ROOM, text=" ", rid="q"), (Error,)),
    ("tell", Tell(msg_id="t1", to="bob", text="psst", rid="q"), (Ack,)),
    ("tell nobody", Tell(msg_id="t2", to="nobody", text="psst", rid="q"), (Error,)),
    ("change nick", ChangeNick(nick="alicia", rid="q"), (Notice,)),
    ("change nick taken", ChangeNick(nick="bob", rid="q"), (Error,)),
    ("change nick same", ChangeNick(nick="alice", rid="q"), (Notice,)),
    ("who", Who(room=ROOM, rid="q"), (Members,)),
    ("list rooms", ListRooms(rid="q"), (RoomList,)),
    ("history", History(room=ROOM, after=0, rid="q"), (Message, HistoryEnd)),
    ("history latest", History(room=ROOM, rid="q"), (Message, HistoryEnd)),
    ("register closed", Register(password=PASSWORD, rid="q"), (Error,)),
    ("moderate no owner", Moderate(room=ROOM, action="private", rid="q"), (Error,)),
]


@pytest.mark.parametrize(
    ("request_", "kinds"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_every_answer_to_a_request_carries_its_rid(
    request_: Event, kinds: tuple[type[Event], ...]
) -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        bob.say(ROOM, "one message to replay")
        until_sentinel(alice)
        mine = answers(alice, request_)
        assert tuple(dict.fromkeys(types(mine))) == kinds, mine
        for event in mine:
            expected = "" if type(event) is Message else "q"  # a replay bracketed, unmarked
            assert getattr(event, "rid", "") == expected, event
        # Bob's copy of a shared notice (if any) does not carry alice's rid.
        assert all(getattr(e, "rid", "") == "" for e in until_sentinel(bob))


def test_a_registration_and_a_moderation_answer_with_their_rid() -> None:
    with running_server(rate=0, registration="open") as (host, port):
        bob = Client.connect(host, port, "bob")
        carol = Client.connect(host, port, "carol")
        carol.send(Register(password=PASSWORD, rid="reg"))  # answered later, off the loop
        registered = carol.wait_for(Notice, lambda n: n.kind == "registered")
        assert registered.rid == "reg" and registered.nick == "carol"
        assert Members in types(answers(carol, Join(room="hr")))
        bob.join("hr")
        notice = answers(carol, Moderate(room="hr", action="topic", text="t", rid="mod"))
        assert [n.rid for n in notice if type(n) is Notice and n.kind == "topic"] == ["mod"]
        theirs = bob.wait_for(Notice, lambda n: n.kind == "topic")
        assert theirs.rid == "" and theirs.reason == "t"


def test_a_gap_carries_the_rid_too() -> None:
    with running_server(rate=0, retain_messages=5, trim_interval=0.05) as (host, port):
        alice = Client.connect(host, port, "alice")
        for i in range(10):
            alice.say("r", f"m{i}")
        deadline = time.monotonic() + 10
        while True:  # until the housekeeping (every 50 ms) has trimmed 1..5
            got = answers(alice, History(room="r", after=0, rid="g"))
            if Gap in types(got) or time.monotonic() > deadline:
                break
        assert got[0] == Gap(room="r", first=1, last=5, rid="g")
        assert [m.seq for m in got if type(m) is Message] == [6, 7, 8, 9, 10]
        assert got[-1] == HistoryEnd(room="r", head=10, rid="g")
        # "The latest N" reports what of it was trimmed as well.
        latest = answers(alice, Join(room="r", history=8, rid="l"))
        assert latest[1] == Gap(room="r", first=3, last=5, rid="l")
        assert [m.seq for m in latest if type(m) is Message] == [6, 7, 8, 9, 10]


def test_a_rid_over_64_characters_is_refused_cut_to_64() -> None:
    with running_server(rate=0) as (host, port):
        alice = Client.connect(host, port, "alice")
        [error] = answers(alice, Who(room=ROOM, rid="x" * 65))
        assert type(error) is Error and error.code == ErrorCode.INVALID_REQUEST
        assert error.rid == "x" * 64
        [members] = answers(alice, Who(room=ROOM, rid="y" * 64))
        assert type(members) is Members and members.rid == "y" * 64


# -- §5.2: ChangeNick ----------------------------------------------------------------------


def test_a_rename_to_ones_own_nick_is_answered_to_the_requester_alone() -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        [same] = answers(alice, ChangeNick(nick="alice"))
        assert type(same) is Notice and same.kind == "renamed"
        assert (same.nick, same.new_nick) == ("alice", "alice")
        assert until_sentinel(bob) == []
        # A change of case only is a real rename, announced as usual.
        [case] = answers(alice, ChangeNick(nick="Alice"))
        assert type(case) is Notice and (case.nick, case.new_nick) == ("alice", "Alice")
        [heard] = until_sentinel(bob)
        assert type(heard) is Notice and (heard.nick, heard.new_nick) == ("alice", "Alice")


# -- §6.3: msg_id, text --------------------------------------------------------------------

RESEND, NEW = "resend", "new"  # a resend: acknowledged again, not delivered again
MSG_IDS: list[tuple[str, Event, int | str]] = [
    ("same say again", Say(msg_id="a", room=ROOM, text="one"), RESEND),
    ("other text", Say(msg_id="a", room=ROOM, text="two"), ErrorCode.MSG_ID_REUSED),
    ("other room", Say(msg_id="a", room="elsewhere", text="one"), ErrorCode.MSG_ID_REUSED),
    ("action", Say(msg_id="a", room=ROOM, text="one", action=True), ErrorCode.MSG_ID_REUSED),
    ("tell with a say's id", Tell(msg_id="a", to="bob", text="one"), ErrorCode.MSG_ID_REUSED),
    ("same tell again", Tell(msg_id="t", to="BOB", text="psst"), RESEND),
    ("tell other text", Tell(msg_id="t", to="bob", text="other"), ErrorCode.MSG_ID_REUSED),
    ("tell action", Tell(msg_id="t", to="bob", text="psst", action=True), 213),
    ("tell other nick", Tell(msg_id="t", to="alice", text="psst"), ErrorCode.MSG_ID_REUSED),
    ("say with a tell's id", Say(msg_id="t", room=ROOM, text="psst"), ErrorCode.MSG_ID_REUSED),
    ("empty say id", Say(msg_id="", room=ROOM, text="x"), ErrorCode.INVALID_REQUEST),
    ("empty tell id", Tell(msg_id="", to="bob", text="x"), ErrorCode.INVALID_REQUEST),
    ("65 characters", Say(msg_id="i" * 65, room=ROOM, text="x"), ErrorCode.INVALID_REQUEST),
    ("64 characters", Say(msg_id="i" * 64, room=ROOM, text="x"), NEW),
    ("another id", Tell(msg_id="b", to="bob", text="one"), NEW),
]


@pytest.mark.parametrize(
    ("request_", "outcome"), [m[1:] for m in MSG_IDS], ids=[m[0] for m in MSG_IDS]
)
def test_a_msg_id_names_one_message(request_: Say | Tell, outcome: int | str) -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        said = alice.say(ROOM, "one", msg_id="a")
        alice.send(Tell(msg_id="t", to="bob", text="psst"))
        told = alice.wait_for(Ack, lambda a: a.msg_id == "t")
        until_sentinel(bob)
        [answer] = answers(alice, request_)
        delivered = until_sentinel(bob)
        if outcome == RESEND:
            assert answer == (said if type(request_) is Say else told)
            assert delivered == []
        elif outcome == NEW:
            assert type(answer) is Ack and answer.msg_id == request_.msg_id
            assert len(delivered) == 1
        else:
            assert type(answer) is Error and answer.code == outcome, answer
            assert answer.msg_id == request_.msg_id[:64]
            assert delivered == []


def test_a_resend_is_acknowledged_with_the_original_seq_and_ts() -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        said = alice.say(ROOM, "one", msg_id="a")
        alice.send(Tell(msg_id="t", to="bob", text="psst"))
        told = alice.wait_for(Ack, lambda a: a.msg_id == "t")
        assert [type(e) for e in until_sentinel(bob)] == [Message, DirectMessage]
        assert answers(alice, Say(msg_id="a", room=ROOM, text="one")) == [said]
        assert answers(alice, Tell(msg_id="t", to="Bob", text="psst")) == [told]
        assert until_sentinel(bob) == []


@pytest.mark.parametrize("space", WHITE_SPACE, ids=[f"U+{ord(c):04X}" for c in WHITE_SPACE])
def test_a_text_of_white_space_alone_is_empty(space: str) -> None:
    with running_server(rate=0) as (host, port):
        alice = Client.connect(host, port, "alice")
        for text in (space, space * 3 + " \t\n"):
            [error] = answers(alice, Say(msg_id="w", room=ROOM, text=text))
            assert type(error) is Error and error.code == ErrorCode.EMPTY_TEXT
        [error] = answers(alice, Tell(msg_id="w", to="alice", text=space))
        assert type(error) is Error and error.code == ErrorCode.EMPTY_TEXT


@pytest.mark.parametrize("text", ["\u200b", "\ufeff", "\u180e", " x ", "\u2060"])
def test_invisible_characters_that_are_not_white_space_are_text(text: str) -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        [ack] = answers(alice, Say(msg_id="z", room=ROOM, text=text))
        assert type(ack) is Ack
        assert bob.wait_for(Message).text == text


def test_the_document_lists_exactly_the_white_space_characters() -> None:
    section = TEXT[TEXT.index("**White space**") :][:600]
    listed: set[int] = set()
    ranges = re.findall(r"U\+([0-9A-F]{4})(?:\u2013U\+([0-9A-F]{4}))?", section)  # en dash
    for first, last in ranges:
        listed.update(range(int(first, 16), int(last or first, 16) + 1))
    assert listed - {0x200B, 0xFEFF} == {ord(c) for c in WHITE_SPACE}
    assert f"{len(WHITE_SPACE)} code" in section


def test_text_over_max_text_is_refused_and_max_text_is_accepted() -> None:
    with running_server(rate=0, max_text=100) as (host, port):
        alice = Client.connect(host, port, "alice")
        [ack] = answers(alice, Say(msg_id="1", room=ROOM, text="é" * 50))  # 100 bytes
        assert type(ack) is Ack
        [error] = answers(alice, Say(msg_id="2", room=ROOM, text="é" * 50 + "x"))
        assert type(error) is Error and error.code == ErrorCode.TEXT_TOO_LONG
        assert error.msg_id == "2"


def test_control_characters_arrive_as_sent_and_the_reference_client_escapes_them() -> None:
    text = "red \x1b[31malert\x07 \x9b2J \u202eevil\tok\nline"
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        alice.say(ROOM, text)
        received = bob.wait_for(Message).text
        assert received == text
        shown = sanitize(received)
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", shown), shown


# -- §6.4: replays -------------------------------------------------------------------------


def test_a_capped_replay_runs_oldest_first_and_pages_on_with_nothing_skipped() -> None:
    with running_server(rate=0, replay_limit=8) as (host, port):
        bob = Client.connect(host, port, "bob")
        for i in range(1, 24):
            bob.say(ROOM, f"message {i}")
        alice = Client(host, port)
        alice.hello("alice")
        first = answers(alice, Join(room=ROOM, history=20))
        assert [m.seq for m in first if type(m) is Message] == list(range(4, 12))
        assert HistoryEnd(room=ROOM, head=23) in first
        seen = [m.seq for m in first if type(m) is Message]
        while seen[-1] < 23:  # the §6.4 paging rule
            page = answers(alice, History(room=ROOM, after=seen[-1]))
            seen += [m.seq for m in page if type(m) is Message]
            assert page[-1] == HistoryEnd(room=ROOM, head=23)
        assert seen == list(range(4, 24))
        latest = answers(alice, History(room=ROOM, limit=20))
        assert [m.seq for m in latest if type(m) is Message] == list(range(4, 12))
        assert all(m.history for m in latest if type(m) is Message)


def test_a_replay_cut_by_its_byte_budget_pages_on_too() -> None:
    with running_server(rate=0, max_output=16_384, max_text=3000) as (host, port):
        bob = Client.connect(host, port, "bob")
        for i in range(1, 13):
            bob.say(ROOM, f"{i} " + "x" * 2900)
        alice = Client.connect(host, port, "alice")
        seen: list[int] = []
        while not seen or seen[-1] < 12:
            page = answers(alice, History(room=ROOM, after=seen[-1] if seen else 0))
            got = [m.seq for m in page if type(m) is Message]
            assert 1 <= len(got) <= 3  # half of 16 KiB holds at most two or three
            seen += got
            assert page[-1] == HistoryEnd(room=ROOM, head=12)
        assert seen == list(range(1, 13))


# -- §6.5: flow control and the rate limit -------------------------------------------------


def test_over_the_rate_a_request_gets_208_with_its_rid_a_ping_nothing_then_bye_306() -> None:
    with running_server(rate=2, burst=3) as (host, port):
        client = Client.connect(host, port, "flood", source=ELSEWHERE)
        frames: list[Event] = [Say(msg_id=f"s{i}", room=ROOM, text="x") for i in range(3)]
        frames += [
            Say(msg_id="over", room=ROOM, text="x", rid="r-over"),  # strike 1: Error 208
            Ping(token=99),  # strike 2: dropped, no Error, no Pong
            Who(room=ROOM, rid="r-who"),  # strike 3: Error 208
            Say(msg_id="last", room=ROOM, text="x"),  # strike 4 > burst: Bye 306
        ]
        client.send_raw(b"".join(encode(f) for f in frames))  # one write: one loop turn
        bye, before = closed_with(client)
        assert bye is not None and bye.code == ErrorCode.FLOODING
        assert [a.msg_id for a in before if type(a) is Ack] == ["s0", "s1", "s2"]
        errors = [e for e in before if type(e) is Error]
        assert [(e.code, e.msg_id, e.rid) for e in errors] == [
            (208, "over", "r-over"),
            (208, "", "r-who"),
        ]
        assert not [e for e in before if type(e) is Pong]


def test_pings_and_pongs_count_against_the_rate() -> None:
    with running_server(rate=1, burst=3) as (host, port):
        client = Client.connect(host, port, "pinger", source=ELSEWHERE)
        client.send_raw(
            encode(Ping(token=1)) + encode(Pong(token=2)) + encode(Ping(token=3))
            + encode(Say(msg_id="x", room=ROOM, text="x", rid="late"))
        )  # fmt: skip
        assert client.wait_for(Pong).token == 1
        assert client.wait_for(Pong).token == 3
        error = client.wait_for(Error)
        assert (error.code, error.msg_id, error.rid) == (208, "x", "late")


def test_the_hello_and_the_bye_do_not_count() -> None:
    with running_server(rate=0.01, burst=2) as (host, port):
        for i in range(3):  # three connections from one address: a Hello and a Bye each
            client = Client.connect(host, port, f"n{i}", source=ELSEWHERE)
            client.bye()
            assert client.wait_closed() is None
        client = Client.connect(host, port, "last", source=ELSEWHERE)
        # The whole burst is still there: a Who and the sentinel Ping both pass.
        assert types(answers(client, Who(room=ROOM))) == [Members]


def test_a_slow_consumer_gets_bye_302_at_a_frame_boundary() -> None:
    with running_server(rate=0, max_output=64 * 1024) as (host, port):
        bob = Client.connect(host, port, "bob", ROOM)
        sleeper = Client(host, port, rcvbuf=4096)
        sleeper.send_raw(hello_raw(sleeper, "sleeper") + encode(Join(room=ROOM)))
        bob.wait_for(Notice, lambda n: n.nick == "sleeper")
        text = "y" * 1013  # an odd size: the kernel's buffer rarely ends on a frame's end
        for i in range(2000):
            bob.say(ROOM, f"{i} {text}")
            if [e for e in bob.seen if type(e) is Notice and e.kind == "dropped"]:
                break
        bye = sleeper.wait_closed(timeout=10)  # TruncatedStream if it ends mid-frame
        assert bye is not None and bye.code == ErrorCode.SLOW_CONSUMER


# -- §7: limits ----------------------------------------------------------------------------


def limits_table() -> dict[str, str]:
    section = TEXT[TEXT.index("## 7. Limits") : TEXT.index("## 8. Error codes")]
    rows = re.findall(r"^\| `(\w+)` \| .* \| ([^|]*) \|$", section, re.MULTILINE)
    return {key: default.strip() for key, default in rows}


def test_the_welcome_announces_every_limit_of_the_document_with_its_default() -> None:
    table = limits_table()
    with running_server() as (host, port):
        limits = Client(host, port).hello("alice").limits
    assert set(table) == set(limits)
    assert {k: str(v) for k, v in limits.items()} == table


def test_the_welcome_announces_exact_limits() -> None:
    settings: dict[str, Any] = {
        "ping_interval": 0.75,
        "idle_timeout": 2.25,
        "handshake_timeout": 1.5,
        "rate": 2.5,
        "burst": 7,
        "max_per_ip": 9,
        "connect_rate": 3.25,
        "connect_burst": 11,
        "room_rate": 0.5,
        "room_burst": 13,
        "retain_messages": 77,
        "retain_age": 12.5,
    }
    with running_server(**settings) as (host, port):
        limits = Client(host, port).hello("alice").limits
    assert {k: limits[k] for k in limits if k.endswith(("_ms", "_milli")) or "per_" in k} == {
        "ping_interval_ms": 750,
        "idle_timeout_ms": 2250,
        "handshake_timeout_ms": 1500,
        "rate_milli": 2500,
        "max_per_address": 9,
        "connect_rate_milli": 3250,
        "room_rate_milli": 500,
        "retain_age_ms": 12500,
    }
    assert (limits["connect_burst"], limits["room_burst"], limits["retain_messages"]) == (
        11,
        13,
        77,
    )
    assert (limits["ping_interval"], limits["idle_timeout"], limits["burst"]) == (1, 3, 7)


# -- what a client must do with what a server sends ----------------------------------------


def test_a_client_ignores_unknown_notice_kinds_fields_and_limit_keys() -> None:
    welcome = json_frame(
        Welcome.TYPE,
        protocol=1,
        server="future",
        version="9",
        nick="alice",
        token="t",
        limits={"max_frame": 65536, "teleport_ms": 5},
        colour="blue",
    )
    notice = json_frame(Notice.TYPE, kind="teleported", nick="bob", ts=1, room=ROOM, where="moon")

    def script(conn: socket.socket) -> None:
        read_frame(conn)  # the Hello
        conn.sendall(welcome + notice)
        read_frame(conn)  # the client's Bye

    with scripted_server(script) as (host, port):
        client = Client(host, port)
        assert client.hello("alice").limits == {"max_frame": 65536, "teleport_ms": 5}
        event = client.recv()
        assert type(event) is Notice and event.kind == "teleported"
        client.bye()


# -- every example of the document ---------------------------------------------------------

# For each client frame of the examples: what the server answers it with (frame types, in
# order of first appearance), to a client "alice" in the lobby next to "bob".
EXPECTED: dict[type[Event], tuple[type[Event], ...]] = {
    Hello: (Welcome,),
    Join: (Notice, HistoryEnd, Members),
    Part: (Error,),  # not in "dev"
    Say: (Ack,),
    Tell: (Ack,),
    ChangeNick: (Notice,),
    Who: (Members,),
    ListRooms: (RoomList,),
    History: (HistoryEnd,),
    Register: (Error,),  # registration is closed
    Moderate: (Error,),  # "hr" has no owner
    Ping: (Pong,),
    Pong: (),
}
CLIENT_EXAMPLES = [
    (e, d) for e, d in examples() if eval(e, vars(p)).TYPE < 0x80 and "Bye(" not in e
]
SERVER_EXAMPLES = [(e, d) for e, d in examples() if (e, d) not in CLIENT_EXAMPLES]


@pytest.mark.parametrize(
    ("expression", "dump"), CLIENT_EXAMPLES, ids=[e for e, _ in CLIENT_EXAMPLES]
)
def test_every_client_example_frame_is_answered_by_a_real_server(
    expression: str, dump: str
) -> None:
    data = parse_hexdump(dump)
    event = eval(expression, vars(p))
    with running_server(rate=0) as (host, port):
        Client.connect(host, port, "bob", ROOM)
        client = Client(host, port)
        if type(event) is Hello:
            client.conn.sent(event)
            client.send_raw(data)
            first = client.recv()
            if event.password:  # no such account here: a login failure, not a protocol error
                assert type(first) is Bye and first.code == ErrorCode.LOGIN_FAILED
            else:
                assert type(first) is Welcome and first.nick == event.nick
            return
        client.hello("alice")
        client.send_raw(data)
        got = until_sentinel(client)
        assert tuple(dict.fromkeys(types(got))) == EXPECTED[type(event)], got


@pytest.mark.parametrize(
    ("expression", "dump"), SERVER_EXAMPLES, ids=[e for e, _ in SERVER_EXAMPLES]
)
def test_every_server_example_frame_is_read_by_the_reference_client(
    expression: str, dump: str
) -> None:
    event = eval(expression, vars(p))
    welcome = Welcome(protocol=1, server="s", version="1", nick="alice", token="t")
    preamble = b"" if type(event) is Welcome else encode(welcome)

    def script(conn: socket.socket) -> None:
        read_frame(conn)
        conn.sendall(preamble + parse_hexdump(dump))

    with scripted_server(script) as (host, port):
        client = Client(host, port)
        client.send(Hello(version=1, nick="alice"))
        if preamble:
            assert client.recv() == welcome
        assert client.recv() == event


def test_the_bye_examples_end_a_real_session() -> None:
    with running_server(rate=0) as (host, port):
        alice, bob = pair(host, port)
        bye = [d for e, d in examples() if e.startswith("Bye(code=ErrorCode.SERVER_SHUTDOWN")]
        alice.send_raw(parse_hexdump(bye[0]))
        left = bob.wait_for(Notice, lambda n: n.kind == "left")
        assert (left.nick, left.reason) == ("alice", "server shutting down")


def test_the_complete_session_of_section_10() -> None:
    with server_instance(rate=0, join_history=1, ping_interval=0.5) as (server, host, port):
        bob = Client.connect(host, port, "bob", ROOM)
        for i in range(1, 41):
            bob.say(ROOM, f"old {i}")
        bob.say(ROOM, "anyone?")
        alice = Client(host, port)
        alice.send(Hello(version=1, nick="alice"))
        welcome = alice.recv()
        assert type(welcome) is Welcome
        assert (welcome.protocol, welcome.server, welcome.nick) == (1, "chatctl", "alice")
        assert welcome.version == __version__ and welcome.token and welcome.limits
        alice.send(Join(room=ROOM))
        joined, replayed, end, members = (alice.recv() for _ in range(4))
        assert type(joined) is Notice and (joined.kind, joined.nick, joined.room) == (
            "joined",
            "alice",
            ROOM,
        )
        assert type(replayed) is Message
        assert (replayed.seq, replayed.sender, replayed.text, replayed.history) == (
            41,
            "bob",
            "anyone?",
            True,
        )
        assert end == HistoryEnd(room=ROOM, head=41)
        assert members == Members(room=ROOM, nicks=["alice", "bob"])
        alice.send(Say(msg_id="1", room=ROOM, text="hi bob"))
        ack = alice.recv()
        assert type(ack) is Ack and (ack.msg_id, ack.recipients, ack.room, ack.seq) == (
            "1",
            1,
            ROOM,
            42,
        )
        ping = alice.recv(timeout=5)
        assert type(ping) is Ping
        alice.send(Pong(token=ping.token))
        alice.send(Bye(reason="bye!"))
        assert alice.wait_closed() is None
        heard = [bob.wait_for(Notice, lambda n: n.kind == "joined")]
        said = bob.wait_for(Message, lambda m: m.sender == "alice")
        assert (said.seq, said.text) == (42, "hi bob")
        left = bob.wait_for(Notice, lambda n: n.kind == "left")
        assert (left.nick, left.reason) == ("alice", "bye!") and heard[0].nick == "alice"
        assert server.hub is not None and not server.hub.nicks.get("alice")


# -- every MUST of the document has a test -------------------------------------------------

# A distinctive piece of each sentence of docs/protocol.md with a MUST, and its tests.
MUSTS: dict[str, list[str]] = {
    "A peer MUST be prepared to receive any number of frames in one read": [
        "test_frames_split_down_to_one_byte_at_a_time_and_many_in_one_write",
    ],
    "a client MUST NOT send one on a plaintext connection": [
        "test_a_login_with_a_password_refused_over_a_link_that_is_not_loopback",
    ],
    "a receiver MUST reject any other value": [
        "test_a_malformed_frame_ends_the_connection_with_its_code",
    ],
    "The body MUST be valid UTF-8": ["test_a_malformed_frame_ends_the_connection_with_its_code"],
    "strings MUST be valid Unicode": ["test_a_malformed_frame_ends_the_connection_with_its_code"],
    "Unknown fields MUST be ignored": [
        "test_unknown_fields_are_ignored",
        "test_a_client_ignores_unknown_notice_kinds_fields_and_limit_keys",
    ],
    "the server MUST NOT end a stream in the middle of a frame": [
        "test_a_slow_consumer_gets_bye_302_at_a_frame_boundary",
    ],
    "clients MUST use `Welcome.nick`": [
        "test_a_nick_in_use_gets_a_variant_and_the_welcome_nick_is_the_one_used",
    ],
    "the receiver MUST answer with a `Pong`": [
        "test_ping_is_answered_with_its_token_and_the_server_pings_a_silent_client",
    ],
    "Clients MUST ignore notices of kinds they do not know": [
        "test_a_client_ignores_unknown_notice_kinds_fields_and_limit_keys",
    ],
    "Text MUST NOT be empty or only white space": [
        "test_a_text_of_white_space_alone_is_empty",
        "test_invisible_characters_that_are_not_white_space_are_text",
        "test_text_over_max_text_is_refused_and_max_text_is_accepted",
    ],
    "Clients MUST NOT pass control characters": [
        "test_control_characters_arrive_as_sent_and_the_reference_client_escapes_them",
    ],
    "the password has crossed the network in clear: a client MUST NOT": [
        "test_a_login_with_a_password_refused_over_a_link_that_is_not_loopback",
    ],
    "MUST echo it": [
        "test_every_answer_to_a_request_carries_its_rid",
        "test_a_registration_and_a_moderation_answer_with_their_rid",
        "test_a_gap_carries_the_rid_too",
        "test_over_the_rate_a_request_gets_208_with_its_rid_a_ping_nothing_then_bye_306",
    ],
    "Clients MUST ignore keys they do not know": [
        "test_a_client_ignores_unknown_notice_kinds_fields_and_limit_keys",
    ],
    "receivers MUST accept both": ["test_json_escapes_and_utf8_are_both_accepted"],
}


def must_sentences() -> list[str]:
    """The sentences of the document with a MUST, outside code blocks, on one line each."""
    prose = re.sub(r"```.*?```", "", TEXT, flags=re.DOTALL)
    prose = re.sub(r"\s+", " ", prose)
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z`*(-])|\s-\s|\|", prose)
    return [s for s in sentences if "MUST" in s and "Key words" not in s]


def test_every_must_of_the_document_has_a_test() -> None:
    sentences = must_sentences()
    assert len(sentences) >= len(MUSTS)
    for sentence in sentences:
        keys = [k for k in MUSTS if k in sentence]
        assert keys, f"a MUST without a test in MUSTS: {sentence!r}"
    for key, tests in MUSTS.items():
        assert any(key in s for s in sentences), f"no longer in the document: {key!r}"
        for name in tests:
            assert callable(globals().get(name)), name
