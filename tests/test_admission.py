"""Admission and the rate meter without sockets (time is passed in); the refused connections'
afterlife over real sockets at the end."""

from __future__ import annotations

import errno
import io
import json
import select
import selectors
import socket
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.names import MSG_ID_MAX
from chatctl.protocol import (
    HEADER_SIZE,
    Bye,
    Error,
    ErrorCode,
    decode_body,
    encode,
)
from chatctl.server.admission import (
    ACCEPT_PAUSE,
    REFUSAL_LOG_EVERY,
    REFUSED_GRACE,
    Admission,
    RateMeter,
    Refusals,
    Verdict,
    client_key,
)
from chatctl.server.config import ServerConfig
from chatctl.server.log import ServerLog
from chatctl.server.transport import TcpTransport


def admission(**settings: object) -> tuple[Admission, io.StringIO]:
    log = io.StringIO()
    config = ServerConfig(**settings)  # type: ignore[arg-type]
    return Admission(config, ServerLog("debug", "json", log)), log


def records(log: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


# -- connections --------------------------------------------------------------------------------


def test_per_address_limit_refuses_only_that_address_until_one_leaves() -> None:
    gate, _ = admission(max_connections=10, max_per_ip=2, connect_rate=0)
    one = gate.client("10.0.0.1", 0.0)
    for _ in range(2):
        assert gate.admit(one, 0.0) is None
        gate.connected(one)
    assert gate.admit(one, 0.0) == "10.0.0.1 holds its maximum of 2 connections"
    assert gate.admit(gate.client("10.0.0.2", 0.0), 0.0) is None
    gate.disconnected(one)
    assert gate.client("10.0.0.1", 0.0).connections == 1
    assert gate.admit(one, 0.0) is None
    gate.disconnected(one)
    assert one.connections == 0 and gate.connections == 0


def test_total_limit_comes_before_the_per_address_one() -> None:
    gate, _ = admission(max_connections=2, max_per_ip=5)
    gate.connected(gate.client("10.0.0.1", 0.0))
    two = gate.client("10.0.0.2", 0.0)
    gate.connected(two)
    three = gate.client("10.0.0.3", 0.0)
    assert gate.admit(three, 0.0) == "the server holds its maximum of 2 connections"
    gate.disconnected(two)
    assert gate.admit(three, 0.0) is None


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "key"),
    [
        ("10.1.2.3", 32, 64, "10.1.2.3"),
        ("10.1.2.3", 24, 64, "10.1.2.0/24"),
        ("::ffff:10.1.2.3", 32, 64, "10.1.2.3"),
        ("2001:db8:1:2:aaaa::1", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", 32, 128, "2001:db8:1:2:bbbb::9"),
        ("fe80::1%eth0", 32, 64, "fe80::/64"),
    ],
)
def test_client_keys_group_addresses_by_network(ip: str, v4: int, v6: int, key: str) -> None:
    assert client_key(ip, v4, v6) == key


def test_a_network_shares_its_connection_limit() -> None:
    gate, _ = admission(max_per_ip=2, ipv4_prefix=24, connect_rate=0)
    for ip in ("127.0.0.1", "127.0.0.2"):
        client = gate.client(ip, 0.0)
        assert gate.admit(client, 0.0) is None
        gate.connected(client)
    third = gate.client("127.0.0.8", 0.0)
    assert gate.admit(third, 0.0) == "127.0.0.0/24 holds its maximum of 2 connections"
    assert gate.admit(gate.client("127.0.1.1", 0.0), 0.0) is None


def test_connection_rate_per_address_survives_disconnects() -> None:
    gate, _ = admission(connect_rate=2.0, connect_burst=3)
    verdicts = []
    for _ in range(5):
        client = gate.client("10.0.0.1", 0.0)
        verdicts.append(gate.admit(client, 0.0))
        if verdicts[-1] is None:
            gate.connected(client)
            gate.disconnected(client)
    assert verdicts[:3] == [None] * 3
    assert verdicts[3] == "10.0.0.1 connects too often (over 2 a second)"
    assert gate.admit(gate.client("10.0.0.2", 0.0), 0.0) is None  # others are not affected
    assert gate.admit(gate.client("10.0.0.1", 0.5), 0.5) is None  # one more each half second


def test_the_rate_meter_is_shared_by_an_addresses_connections_and_outlives_them() -> None:
    gate, _ = admission(rate=10.0, burst=5)
    first = gate.client("10.0.0.1", 0.0)
    gate.connected(first)
    assert [first.meter.take(0.0) for _ in range(5)] == [Verdict.PASS] * 5
    gate.disconnected(first)
    again = gate.client("10.0.0.1", 0.0)  # a reconnect: the same meter, no fresh burst
    assert again.meter is first.meter
    assert again.meter.take(0.0) is Verdict.LIMITED_FIRST
    assert gate.client("10.0.0.2", 0.0).meter.take(0.0) is Verdict.PASS


def test_idle_clients_are_forgotten_once_their_allowances_are_whole() -> None:
    gate, _ = admission(rate=10.0, burst=5, connect_rate=2.0, connect_burst=2)
    busy = gate.client("10.0.0.1", 0.0)
    gate.connected(busy)
    spent = gate.client("10.0.0.2", 0.0)
    assert gate.admit(spent, 0.0) is None
    spent.meter.take(0.0)
    assert gate.sweep(0.0) == 0
    assert gate.sweep(0.4) == 0  # 10.0.0.2's connection token is not back yet
    assert gate.sweep(0.6) == 1  # now it is: forgotten; 10.0.0.1 holds a connection
    assert set(gate.clients) == {"10.0.0.1"}


def test_the_client_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chatctl.server.admission.MAX_CLIENTS", 3)
    gate, _ = admission()
    held = gate.client("10.0.0.1", 0.0)
    gate.connected(held)
    for n in range(2, 10):
        gate.client(f"10.0.0.{n}", 0.0).meter.take(0.0)  # owing, but without connections
        assert len(gate.clients) <= 3
    assert "10.0.0.1" in gate.clients  # a client with a connection is never forgotten


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=60))
def test_property_counts_follow_connects_and_disconnects(ops: list[tuple[bool, str]]) -> None:
    gate, _ = admission(max_connections=6, max_per_ip=3, connect_rate=0)
    held: dict[str, int] = {}
    for connect, ip in ops:
        client = gate.client(ip, 0.0)
        if connect:
            reason = gate.admit(client, 0.0)
            expected_full = sum(held.values()) >= 6 or held.get(ip, 0) >= 3
            assert (reason is not None) == expected_full
            if reason is None:
                gate.connected(client)
                held[ip] = held.get(ip, 0) + 1
        elif held.get(ip):
            gate.disconnected(client)
            held[ip] -= 1
        assert gate.connections == sum(held.values())
        for each in ("a", "b", "c"):
            assert gate.client(each, 0.0).connections == held.get(each, 0)
        gate.sweep(0.0)
        # Clients without connections and with nothing owed are forgotten: the table is
        # bounded by the connections.
        assert set(gate.clients) == {ip for ip, n in held.items() if n}


def test_refusal_log_is_one_line_a_second_counting_the_others() -> None:
    gate, log = admission()
    gate.refused("1.2.3.4:1", "full", 100.0)
    gate.refused("1.2.3.4:2", "full", 100.0 + REFUSAL_LOG_EVERY / 2)
    gate.refused("1.2.3.4:3", "full", 100.0 + REFUSAL_LOG_EVERY * 0.99)
    assert [r["msg"] for r in records(log)] == ["refused 1.2.3.4:1: full"]
    gate.refused("1.2.3.4:4", "full", 100.0 + REFUSAL_LOG_EVERY)
    lines = records(log)
    assert len(lines) == 2
    assert lines[1]["msg"] == "refused 1.2.3.4:4: full (2 more refused since the last line)"
    assert lines[1]["more"] == 2
    gate.refused("1.2.3.4:5", "full", 100.0 + 3 * REFUSAL_LOG_EVERY)
    assert records(log)[2]["more"] == 0


def test_accepts_pause_on_running_out_of_descriptors_only() -> None:
    gate, log = admission()
    assert not gate.accept_failed(OSError(errno.ECONNABORTED, "aborted"), 10.0)
    assert not gate.accepts_resume(10.0 + ACCEPT_PAUSE)
    assert gate.accept_failed(OSError(errno.EMFILE, "Too many open files"), 10.0)
    assert records(log)[0]["event"] == "accept_paused"
    assert not gate.accepts_resume(10.0 + ACCEPT_PAUSE / 2)
    assert gate.accepts_resume(10.0 + ACCEPT_PAUSE)
    assert not gate.accepts_resume(10.0 + 2 * ACCEPT_PAUSE)  # once


# -- the rate meter ---------------------------------------------------------------------------


def test_meter_allows_a_burst_then_the_rate() -> None:
    meter = RateMeter(10.0, 5, now=0.0)
    assert [meter.take(0.0) for _ in range(5)] == [Verdict.PASS] * 5
    assert meter.take(0.0) is Verdict.LIMITED_FIRST
    assert meter.take(0.0) is Verdict.LIMITED
    assert meter.take(0.1) is Verdict.PASS  # one token a tenth of a second
    assert meter.take(0.1) is Verdict.LIMITED


def test_meter_calls_more_than_a_burst_of_refusals_flooding() -> None:
    meter = RateMeter(10.0, 3, now=0.0)
    verdicts = [meter.take(0.0) for _ in range(7)]
    assert verdicts == [Verdict.PASS] * 3 + [
        Verdict.LIMITED_FIRST,
        Verdict.LIMITED,
        Verdict.LIMITED,
        Verdict.FLOODING,
    ]


def test_strikes_decay_at_the_rate_so_a_new_episode_is_reported_again() -> None:
    meter = RateMeter(10.0, 3, now=0.0)
    assert meter.take(0.0) is Verdict.PASS
    meter.charge(0.0, 8)  # 2 - 8: six tokens in debt
    assert meter.take(0.0) is Verdict.LIMITED_FIRST
    assert meter.take(0.0) is Verdict.LIMITED
    assert meter.strikes == 2
    # Still in debt 0.2 s later, but the two strikes have decayed: a new episode.
    assert meter.take(0.2) is Verdict.LIMITED_FIRST
    assert meter.strikes == 1


def test_expensive_requests_are_charged_after_the_fact() -> None:
    meter = RateMeter(10.0, 5, now=0.0)
    meter.charge(0.0, 8)
    assert meter.tokens(0.0) == -3  # in debt: the next frames wait for it
    assert meter.take(0.25) is Verdict.LIMITED_FIRST
    assert meter.take(0.5) is Verdict.PASS


def test_no_rate_means_no_limit() -> None:
    meter = RateMeter(0.0, 1, now=0.0)
    assert all(meter.take(0.0) is Verdict.PASS for _ in range(1000))


@dataclass
class OldBucket:
    """The rate limit as Server._take_token computed it inline before it moved to admission.py
    (per-peer tokens, refill_at and strikes): the reference the meter must match."""

    rate: float
    burst: int
    tokens: float
    refill_at: float
    strikes: float = 0.0

    def take(self, now: float) -> str:
        elapsed = now - self.refill_at
        self.refill_at = now
        tokens = min(self.tokens + elapsed * self.rate, self.burst)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return "pass"
        self.tokens = tokens
        strikes = max(self.strikes - elapsed * self.rate, 0.0)
        first = strikes == 0.0
        self.strikes = strikes = strikes + 1.0
        if strikes > self.burst:
            return "flooding"
        return "first" if first else "limited"


_SAME = {"pass": Verdict.PASS, "first": Verdict.LIMITED_FIRST, "limited": Verdict.LIMITED}
_SAME["flooding"] = Verdict.FLOODING


@given(
    rate=st.sampled_from([1.0, 10.0, 50.0, 333.0]),
    burst=st.integers(min_value=1, max_value=20),
    # (seconds since the last frame, tokens its answer cost beyond the frame: hub.last_cost - 1)
    frames=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 2.0]),
            st.sampled_from([0.0, 0.0, 0.0, 0.05, 1.0, 1.01, 2.5, 10.0]),
        ),
        max_size=80,
    ),
)
def test_property_meter_matches_the_old_inline_bucket(
    rate: float, burst: int, frames: list[tuple[float, float]]
) -> None:
    now = 1000.0
    meter = RateMeter(rate, burst, now)
    old = OldBucket(rate, burst, float(burst), now)
    for gap, extra in frames:
        now += gap
        verdict = meter.take(now)
        assert verdict is _SAME[old.take(now)]
        if verdict is Verdict.PASS and extra:  # only a frame that got through costs more
            meter.charge(now, extra)
            old.tokens -= extra
        assert meter.tokens(now) == pytest.approx(old.tokens)
        assert meter.strikes == pytest.approx(old.strikes)
        assert meter.tokens(now) <= burst
        if verdict is Verdict.FLOODING:
            return  # the loop closes the connection


@given(
    rate=st.sampled_from([1.0, 10.0, 50.0]),
    burst=st.integers(min_value=1, max_value=20),
    slack=st.lists(st.floats(min_value=0.01, max_value=1.0), max_size=60),
)
def test_property_a_client_within_the_rate_is_never_refused(
    rate: float, burst: int, slack: list[float]
) -> None:
    now = 0.0
    meter = RateMeter(rate, burst, now)
    for extra in slack:
        now += (1.0 + extra) / rate
        assert meter.take(now) is Verdict.PASS


# -- what an over-rate frame gets ---------------------------------------------------------------


def test_over_rate_answers_with_an_error_and_logs_once_per_episode() -> None:
    gate, log = admission(rate=5.0)
    msg_id = "m" * (MSG_ID_MAX + 10)
    frame = gate.over_rate(Verdict.LIMITED_FIRST, "1.2.3.4:5", "alice", msg_id)
    assert frame is not None
    error = decode_body(frame[2], frame[HEADER_SIZE:])
    assert error == Error(
        code=ErrorCode.RATE_LIMITED,
        message="over the rate limit of 5 frames a second",
        msg_id="m" * MSG_ID_MAX,
    )
    assert gate.over_rate(Verdict.LIMITED, "1.2.3.4:5", "alice", "") is not None
    assert [r["event"] for r in records(log)] == ["rate_limited"]
    assert gate.over_rate(Verdict.FLOODING, "1.2.3.4:5", "alice", "") is None
    assert [r["event"] for r in records(log)] == ["rate_limited", "flooding"]


# -- refused connections, over real sockets -------------------------------------------------------


def test_a_refused_connection_gets_its_bye_then_the_end_of_the_stream() -> None:
    client, server_side = socket.socketpair()
    sel = selectors.DefaultSelector()
    refusals = Refusals(sel, bytearray(4096))
    try:
        entry = refusals.refuse(TcpTransport(server_side), "too many", 50.0)
        assert entry is not None and entry.deadline == 50.0 + REFUSED_GRACE
        assert len(refusals) == 1
        expected = encode(Bye(code=ErrorCode.TOO_MANY_CONNECTIONS, reason="too many"))
        received = b""
        while True:
            ready, _, _ = select.select([client], [], [], 5.0)
            assert ready, "no end of stream within 5 s"
            chunk = client.recv(4096)
            if not chunk:
                break
            received += chunk
        assert received == expected
        # It is half-closed: what the client still sends is read and thrown away.
        client.sendall(b"Hello?")
        assert sel.select(5.0), "the refused connection never became readable"
        refusals.readable(entry)
        assert len(refusals) == 1
        client.close()
        assert sel.select(5.0)
        refusals.readable(entry)  # reads the end of the stream: closed
        assert len(refusals) == 0
        assert entry.transport.fileno() == -1
        refusals.close(entry)  # idempotent
    finally:
        client.close()
        refusals.close_all()
        sel.close()
