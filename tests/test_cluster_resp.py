"""The RESP2 codec (chatctl/cluster/resp.py): commands as Redis reads them, and a pipeline that
matches replies to commands in order, held to a model by a hypothesis state machine (random
commands, sends, replies cut anywhere, lost connections); then against a real redis-server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chatctl.cluster.resp import Pipeline, RedisError, Reply, RespProtocolError, command
from tests.redis_servers import redis_server

ARGS = st.one_of(st.binary(max_size=20), st.text(max_size=10), st.integers(-(2**63), 2**63 - 1))

# Reply values, and their RESP2 encodings written independently of the code under test.
_leaves = st.one_of(
    st.binary(max_size=30),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12).map(
        lambda t: RedisError("ERR " + t)
    ),
)
REPLIES = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


def encoded(reply: Reply, *, simple: bool = False) -> bytes:
    """`reply` as Redis would send it (`simple`: a bytes value as a simple string, +...)."""
    if isinstance(reply, RedisError):
        return b"-" + str(reply).encode() + b"\r\n"
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        if simple and b"\r" not in reply and b"\n" not in reply:
            return b"+" + reply + b"\r\n"
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(encoded(item) for item in reply)


def same(a: Reply, b: Reply) -> bool:
    if isinstance(a, RedisError) or isinstance(b, RedisError):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@given(st.lists(ARGS, min_size=1, max_size=8))
def test_a_command_is_an_array_of_bulk_strings_as_redis_reads_it(
    args: list[bytes | str | int],
) -> None:
    reader = hiredis.Reader()
    reader.feed(command(*args))
    as_bytes = [
        a if isinstance(a, bytes) else a.encode() if isinstance(a, str) else str(a).encode()
        for a in args
    ]
    assert reader.gets() == as_bytes
    assert reader.gets() is False  # nothing left over


def test_a_command_refuses_what_is_not_an_argument() -> None:
    with pytest.raises(ValueError):
        command()
    with pytest.raises(TypeError):
        command("SET", 1.5)  # type: ignore[arg-type]


class PipelineMachine(RuleBasedStateMachine):
    """The model: tags queued, tags in flight, and the bytes of the replies Redis has sent but
    the pipeline has not been fed yet (with the replies they hold, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: Pipeline[int] = Pipeline()
        self.next_tag = 0
        self.queued: list[int] = []
        self.in_flight: list[int] = []
        self.answered = 0  # of in_flight, how many Redis has answered (in `wire`)
        self.wire = b""
        self.expected: list[tuple[int, Reply]] = []  # replies in `wire`, not yet received

    @rule(args=st.lists(ARGS, min_size=1, max_size=3))
    def send(self, args: list[bytes | str | int]) -> None:
        self.pipeline.send(command(*args), self.next_tag)
        self.queued.append(self.next_tag)
        self.next_tag += 1

    @rule()
    def hand_out(self) -> None:
        data = self.pipeline.data_to_send()
        reader = hiredis.Reader()
        reader.feed(data)
        commands = 0
        while reader.gets() is not False:
            commands += 1
        assert commands == len(self.queued)
        self.in_flight += self.queued
        self.queued = []

    @rule(reply=REPLIES, simple=st.booleans())
    def redis_answers(self, reply: Reply, simple: bool) -> None:
        if self.answered < len(self.in_flight):
            self.wire += encoded(reply, simple=simple)
            self.expected.append((self.in_flight[self.answered], reply))
            self.answered += 1

    @rule(cut=st.integers(0, 64))
    def bytes_arrive(self, cut: int) -> None:
        chunk, self.wire = self.wire[:cut], self.wire[cut:]
        got = self.pipeline.receive(chunk)
        # Whatever completed is exactly the oldest expected replies, in order.
        assert len(got) <= len(self.expected)
        for (tag, reply), (want_tag, want) in zip(got, self.expected, strict=False):
            assert tag == want_tag
            assert same(reply, want), (reply, want)
        del self.expected[: len(got)]
        del self.in_flight[: len(got)]
        self.answered -= len(got)

    @rule()
    def connection_lost(self) -> None:
        unsent, unknown = self.pipeline.reset()
        assert unsent == self.queued
        assert unknown == self.in_flight
        self.queued, self.in_flight, self.answered = [], [], 0
        self.wire, self.expected = b"", []

    @invariant()
    def counts(self) -> None:
        assert self.pipeline.queued == len(self.queued)
        assert self.pipeline.in_flight == len(self.in_flight)


TestPipeline = PipelineMachine.TestCase


# Bytes that start no reply: neither a RESP2 type nor one of RESP3's, which hiredis reads too
# (a Redis spoken to in RESP2 never sends those).
@given(st.binary(min_size=1, max_size=20).filter(lambda b: b[:1] not in b"+-:$*_,#=(%~>|!"))
def test_bytes_that_are_not_resp_are_a_protocol_error(garbage: bytes) -> None:
    pipeline: Pipeline[int] = Pipeline()
    pipeline.send(command("PING"), 0)
    pipeline.data_to_send()
    with pytest.raises(RespProtocolError):
        pipeline.receive(garbage + b"\r\n")


def test_a_reply_nothing_waits_for_is_a_protocol_error() -> None:
    pipeline: Pipeline[int] = Pipeline()
    pipeline.send(command("PING"), 0)  # queued, not handed out: nothing is in flight
    with pytest.raises(RespProtocolError, match="no command"):
        pipeline.receive(b"+PONG\r\n")


def test_an_error_reply_is_a_value_and_the_next_replies_still_match(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        pipeline: Pipeline[str] = Pipeline()
        pipeline.send(command("SET", "k", "v"), "set")
        pipeline.send(command("LPUSH", "k", "x"), "wrongtype")
        pipeline.send(command("NOSUCHCOMMAND"), "unknown")
        pipeline.send(command("GET", "k"), "get")
        pipeline.send(command("GET", "missing"), "nil")
        pipeline.send(command("INCRBY", "n", 41), "incr")
        pipeline.send(command("RPUSH", "l", b"\x00\xff", "é"), "rpush")
        pipeline.send(command("LRANGE", "l", 0, -1), "lrange")
        big = bytes(range(256)) * 4096  # 1 MiB: its reply comes in many pieces
        pipeline.send(command("SET", "big", big), "setbig")
        pipeline.send(command("GET", "big"), "getbig")
        got: dict[str, Reply] = {}
        with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as sock:
            sock.sendall(pipeline.data_to_send())
            deadline = time.monotonic() + 10
            while pipeline.in_flight and time.monotonic() < deadline:
                got.update(pipeline.receive(sock.recv(65536)))
        assert got["set"] == b"OK"
        wrong = got["wrongtype"]
        assert isinstance(wrong, RedisError) and wrong.kind == "WRONGTYPE"
        assert isinstance(got["unknown"], RedisError) and got["unknown"].kind == "ERR"
        assert got["get"] == b"v"
        assert got["nil"] is None
        assert got["incr"] == 41
        assert got["rpush"] == 2
        assert got["lrange"] == [b"\x00\xff", "é".encode()]
        assert got["setbig"] == b"OK"
        assert got["getbig"] == big
