"""`chatctl bench --target irc://`: the IRC adapter's set-up and ping answers on fake byte
streams, and real runs against ngircd (started here with benchmarks/ircd.py's configuration;
skipped only when ngircd is not installed — CI installs it)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.ircd import irc_server, ngircd_config
from chatctl.bench.adapters import (
    ADAPTERS,
    IRC_ACK_EVERY,
    IRC_MAX_LINE,
    IrcSetup,
    Kind,
    PingAnswers,
    SetupFailed,
    irc_split,
)
from chatctl.bench.params import Params
from chatctl.bench.payload import make_payload
from chatctl.bench.plan import BadBenchOption, Target, make_plan, parse_target
from chatctl.bench.scan import RoundBuffer
from tests.servers import dies_with_parent, free_port, run_chatctl

IRC = ADAPTERS[Kind.irc]

# -- targets -------------------------------------------------------------------------------------


def test_irc_targets_parse_and_print_back() -> None:
    t = parse_target("irc://127.0.0.1:6667")
    assert (t.kind, t.host, t.port, t.tls, t.url) == (
        Kind.irc,
        "127.0.0.1",
        6667,
        False,
        "irc://127.0.0.1:6667",
    )
    assert parse_target("irc://[::1]:7000").url == "irc://[::1]:7000"
    with pytest.raises(BadBenchOption, match="irc://HOST:PORT"):
        parse_target("irc://127.0.0.1")  # a bench target names its port
    with pytest.raises(BadBenchOption, match="irc"):
        parse_target("ircs://127.0.0.1:6697")  # no TLS for IRC (yet)


def test_a_size_that_would_not_fit_an_irc_line_is_refused_before_the_run() -> None:
    target = Target(kind=Kind.irc, host="127.0.0.1", port=1)
    room = "bench-abcdef-fan"
    limit = IRC.max_size(room)
    framing = len(b"PRIVMSG #%s :\r\n" % room.encode())
    assert limit == IRC_MAX_LINE - framing - IRC.relay_overhead
    plan = make_plan(Params(size=limit, room=room), target)
    assert plan.params.size == limit
    with pytest.raises(BadBenchOption, match=f"at most {limit} bytes"):
        make_plan(Params(size=limit + 1, room=room), target)
    make_plan(Params(size=limit + 1, room=room), Target(kind=Kind.nats, host="h", port=1))


# -- set-up --------------------------------------------------------------------------------------

WELCOME = (
    b":bench.irc 001 n :Welcome to the Internet Relay Network n!~n@127.0.0.1\r\n"
    b":bench.irc 005 n PREFIX=(qaohv)~&@%+ CHANTYPES=#&+ :are supported on this server\r\n"
    b":bench.irc 376 n :End of MOTD command\r\n"
)
JOINED = (
    b":n!~n@127.0.0.1 JOIN :#r\r\n"
    b":bench.irc 353 n = #r :@n other\r\n"
    b":bench.irc 366 n #R :End of NAMES list\r\n"  # channel names are case-insensitive
)


def test_registration_then_join_then_end_of_names() -> None:
    setup = IRC.setup(name="n", room="r", sub=True, pub=False)
    assert setup.first == b"NICK n\r\nUSER n 0 * :bench\r\n"
    assert setup.feed(b"NOTICE * :*** Looking up your hostname\r\n") == (b"", False)
    # a PING before registration (some servers ask for one) is answered with its token
    assert setup.feed(b"PING :12345\r\n:bench.irc 00") == (b"PONG :12345\r\n", False)
    # 422: no MOTD (miniircd), an error numeric that refuses nothing
    assert setup.feed(b"1 n :Welcome\r\n:s 422 n :MOTD File is missing\r\n") == (
        b"JOIN #r\r\n",
        False,
    )
    # another channel's end of NAMES does not finish it
    assert setup.feed(b":bench.irc 366 n #elsewhere :End of NAMES list\r\n") == (b"", False)
    out, done = setup.feed(JOINED)
    assert (out, done) == (b"", True)


def test_without_a_room_registration_is_the_whole_set_up() -> None:
    setup = IRC.setup(name="n", room=None, sub=False, pub=False)
    assert setup.feed(WELCOME) == (b"", True)


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b":s 433 * n :Nickname already in use\r\n", "433"),
        (b":s 432 * n :Erroneous nickname\r\n", "Erroneous nickname"),
        (b":s 474 n #r :Cannot join channel (+b)\r\n", "474 #r"),
        (b"ERROR :Closing connection: n[127.0.0.1] (Too many connections)\r\n", "Too many"),
    ],
)
def test_a_refusal_in_set_up_fails_it_with_the_servers_words(reply: bytes, words: str) -> None:
    setup = IRC.setup(name="n", room="r", sub=True, pub=True)
    setup.feed(WELCOME)
    with pytest.raises(SetupFailed, match=words):
        setup.feed(reply)


def test_a_stream_that_never_ends_a_line_is_not_irc() -> None:
    setup = IRC.setup(name="n", room="r", sub=True, pub=True)
    with pytest.raises(SetupFailed, match="line"):
        for _ in range(10):
            setup.feed(b"x" * 1024)


@given(st.lists(st.integers(1, 40), max_size=30))
def test_property_set_up_is_the_same_however_the_replies_are_cut(cuts: list[int]) -> None:
    data = b":s NOTICE * :hi\r\nPING :tok\r\n" + WELCOME + JOINED
    setup = IrcSetup("n", "r", True, False)
    sent, done = b"", False
    for cut in [*cuts, len(data)]:
        chunk, data = data[:cut], data[cut:]
        if chunk and not done:
            out, done = setup.feed(chunk)
            sent += out
    assert done and sent == b"PONG :tok\r\nJOIN #r\r\n"


@pytest.mark.parametrize(
    ("line", "split"),
    [
        (b":s 366 n #r :End of NAMES list", (b"s", b"366", [b"n", b"#r", b"End of NAMES list"])),
        (b"PING :x y", (b"", b"PING", [b"x y"])),
        (b"ping tok", (b"", b"PING", [b"tok"])),
        (b":n!u@h QUIT", (b"n!u@h", b"QUIT", [])),
        (b"", (b"", b"", [])),
    ],
)
def test_irc_split(line: bytes, split: tuple[bytes, bytes, list[bytes]]) -> None:
    assert irc_split(line) == split


# -- publishing ----------------------------------------------------------------------------------


def test_publishes_are_privmsgs_with_a_ping_as_the_ack_every_so_often() -> None:
    make = IRC.publisher(pub=3, room="r", size=40)
    first = make(0, 99)
    assert first == b"PRIVMSG #r :" + make_payload(3, 0, 99, 40) + b"\r\n"
    last = make(IRC_ACK_EVERY - 1, 5)
    assert last.endswith(b"\r\nPING :chatctl-bench\r\n")
    # the server's answer holds the ack pattern once; nothing else in an IRC stream does
    pong = b":bench.irc PONG bench.irc :chatctl-bench\r\n"
    assert pong.count(IRC.ack) == 1
    relayed = b":n!~n@127.0.0.1 PRIVMSG #r :" + make_payload(3, 0, 99, 40) + b"\r\n"
    assert IRC.ack not in relayed and (IRC.ping or b"?") not in relayed


# -- answering the server's pings ----------------------------------------------------------------

PAYLOAD_LINE = b":p!~p@127.0.0.1 PRIVMSG #r :" + make_payload(0, 7, 1234, 40) + b"\r\n"
tokens = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=0, max_size=80
).map(str.encode)
lines = st.one_of(
    st.just((PAYLOAD_LINE, None)),
    st.just((b":q!~q@127.0.0.1 JOIN :#r\r\n", None)),
    tokens.map(lambda t: (b"PING :" + t + b"\r\n", b"PONG :" + t + b"\r\n")),
    tokens.map(lambda t: (b":bench.irc PING :" + t + b"\n", b"PONG :" + t + b"\r\n")),
    tokens.filter(lambda t: b" " not in t).map(
        lambda t: (b"PING " + t + b"\r\n", b"PONG " + t + b"\r\n")
    ),
)


def answer_in_rounds(stream: bytes, cuts: list[int]) -> bytes:
    """What the worker sends back for `stream` read in pieces of the given sizes: each read
    is one segment of a round (with the previous read's tail), fed to PingAnswers only when
    the round holds a new PING or a PING line is unfinished, as Worker.answer_pings does."""
    answers, tail, out = PingAnswers(), b"", b""
    rnd = RoundBuffer(size=1 << 16, max_read=4096)
    for cut in [*cuts, len(stream)]:
        chunk, stream = stream[:cut], stream[cut:]
        if not chunk:
            continue
        rnd.clear()
        rnd.slot(tail)[: len(chunk)] = chunk
        tail = rnd.commit(len(chunk), 0)
        if rnd.segments_with(PingAnswers.PATTERN) or answers.partial is not None:
            out += answers.feed(*rnd.segment(0))
    return out


@given(st.lists(lines, max_size=12), st.lists(st.integers(1, 30), max_size=40))
def test_property_every_ping_is_answered_once_however_the_stream_is_cut(
    script: list[tuple[bytes, bytes | None]], cuts: list[int]
) -> None:
    stream = b"".join(line for line, _ in script)
    expected = b"".join(pong for _, pong in script if pong is not None)
    assert answer_in_rounds(stream, cuts) == expected


def test_a_ping_line_split_far_from_its_start_is_still_answered() -> None:
    token = b"t" * 200  # much longer than the tail a segment carries
    stream = PAYLOAD_LINE + b"PING :" + token + b"\r\n" + PAYLOAD_LINE
    assert answer_in_rounds(stream, [len(PAYLOAD_LINE) + 3] + [7] * 40) == (
        b"PONG :" + token + b"\r\n"
    )


# -- against a real ngircd -----------------------------------------------------------------------


def ngircd(ping_timeout: int = 120) -> Iterator[int]:
    if shutil.which("ngircd") is None:
        pytest.skip("ngircd is not installed (CI installs it: apt-get install ngircd)")
    port = free_port()
    with irc_server("ngircd", port, dies_with_parent(), ping_timeout=ping_timeout):
        yield port


@pytest.fixture(scope="module")
def ngircd_port() -> Iterator[int]:
    yield from ngircd()


def bench(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = run_chatctl("bench", *args, "--json", timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def assert_all_delivered(data: dict[str, Any], deliveries: int, published: int) -> None:
    assert data["verification"] == {
        "expected": deliveries,
        "delivered": deliveries,
        "unique": deliveries,
        "lost": 0,
        "duplicated": 0,
        "reordered": 0,
        "ok": True,
    }
    assert data["publish"]["messages"] == published
    assert data["disconnects"] == 0 and data["connect"]["failed"] == 0


def test_the_configuration_turns_penalties_off_and_listens_on_loopback_only() -> None:
    conf = ngircd_config(6667)
    for setting in ("MaxPenaltyTime = 0", "Listen = 127.0.0.1", "MaxConnectionsIP = 0"):
        assert setting in conf
    assert "PidFile" not in conf  # ngircd's default: none


def test_fanout_against_ngircd_loses_nothing(ngircd_port: int) -> None:
    target = f"irc://127.0.0.1:{ngircd_port}"
    code, data, _ = bench("fanout", "--target", target, "--sub", "3", "--msgs", "200")
    assert code == 0
    assert_all_delivered(data, deliveries=3 * 200, published=200)
    assert data["connect"]["held"] == 4
    assert data["server"]["pid"] > 0  # found by its listening port, CPU measured


def test_room_against_ngircd_nobody_hears_themselves(ngircd_port: int) -> None:
    target = f"irc://127.0.0.1:{ngircd_port}"
    code, data, _ = bench("room", "--target", target, "--clients", "4", "--msgs", "100")
    assert code == 0
    # each of 4 clients hears the other 3: IRC does not echo a PRIVMSG to its sender
    assert_all_delivered(data, deliveries=4 * 3 * 100, published=400)


def test_connect_scenario_registers_every_client(ngircd_port: int) -> None:
    code, data, _ = bench("connect", "--target", f"irc://127.0.0.1:{ngircd_port}", "-N", "200")
    assert code == 0
    assert (data["connect"]["held"], data["connect"]["failed"]) == (200, 0)


def test_subscribers_answer_the_servers_pings_and_stay() -> None:
    # ngircd pings a client silent for 5 s and closes it 5 s later without a PONG: silent
    # subscribers of a 12 s run must answer, or they are gone and their messages lost.
    for port in ngircd(ping_timeout=5):
        target = f"irc://127.0.0.1:{port}"
        code, data, _ = bench(
            "fanout", "--target", target, "--sub", "2", "--rate", "50", "--msgs", "600"
        )  # fmt: skip
        assert code == 0, data.get("server_said")
        assert_all_delivered(data, deliveries=2 * 600, published=600)
