"""The non-blocking Redis link (chatctl/cluster/link.py) against a real redis-server: pipelined
commands, the database of the URL, a Redis killed and started again (the link says so, fails
what was in flight, and comes back by itself), nothing listening, a peer that is not Redis,
and one that never answers. The tests drive the link as the server's loop does (select,
ready, tick, flush) and wait on conditions with deadlines."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatctl.cluster.link import LinkState, RedisLink, Unavailable
from chatctl.cluster.resp import RedisError, Reply
from chatctl.errors import ChatctlError
from chatctl.redis_url import RedisUrl, parse_redis_url
from tests.redis_servers import redis_call, redis_server
from tests.servers import free_port

WAIT = 10.0


class Driver:
    """A link on its own selector, driven like the server's loop drives it."""

    def __init__(self, url: RedisUrl, *, reply_timeout: float = 10.0) -> None:
        self.sel = selectors.DefaultSelector()
        self.ups = 0
        self.downs: list[str] = []
        self.link = RedisLink(
            "test",
            url,
            self.sel,
            on_up=self._up,
            on_down=self.downs.append,
            reply_timeout=reply_timeout,
        )

    def _up(self) -> None:
        self.ups += 1

    def turn(self, timeout: float = 0.05) -> None:
        wake = self.link.wake_at
        if wake is not None:
            timeout = max(min(timeout, wake - time.monotonic()), 0.0)
        for key, mask in self.sel.select(timeout):
            key.data.ready(mask)
        self.link.tick(time.monotonic())
        self.link.flush()

    def until(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {timeout} s: downs {self.downs}")
            self.turn()

    def call(self, *args: bytes | str | int) -> Reply:
        got: list[Reply] = []
        self.link.call(*args, on_reply=got.append)
        self.until(lambda: bool(got), f"answered {args!r}")
        return got[0]

    def close(self) -> None:
        self.link.close()
        self.sel.close()


@contextmanager
def driver(url: str, *, reply_timeout: float = 10.0) -> Iterator[Driver]:
    d = Driver(parse_redis_url(url), reply_timeout=reply_timeout)
    d.link.connect()
    try:
        yield d
    finally:
        d.close()


def test_a_thousand_commands_go_in_one_send_and_their_replies_come_in_order(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis, driver(redis.url) as d:
        d.until(lambda: d.link.state is LinkState.READY, "connected")
        assert d.ups == 1
        got: list[Reply] = []
        for _ in range(1000):
            d.link.call("INCR", "n", on_reply=got.append)
        assert d.link.in_flight == 0  # queued only: nothing leaves before the flush
        d.link.flush()
        assert d.link.in_flight == 1000
        d.until(lambda: len(got) == 1000, "all answered")
        assert got == list(range(1, 1001))
        error = d.call("LPUSH", "n", "x")
        assert isinstance(error, RedisError) and error.kind == "WRONGTYPE"
        assert d.call("GET", "n") == b"1000"  # an error reply leaves the link usable


def test_the_database_of_the_url_is_selected_before_anything_else(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, driver(f"{redis.url}/3") as d:
        d.until(lambda: d.link.state is LinkState.READY and d.ups == 1, "ready")
        assert d.call("SET", "where", "three") == b"OK"
        assert redis_call(redis.port, "GET", "where", db=3) == b"three"
        assert redis_call(redis.port, "GET", "where") is None


def test_a_killed_redis_fails_what_was_in_flight_and_the_link_comes_back_by_itself(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis, driver(redis.url) as d:
        d.until(lambda: d.link.state is LinkState.READY, "connected")
        assert d.call("SET", "a", "1") == b"OK"
        in_flight: list[Reply] = []
        # BLOCK keeps it in flight until the kill: its outcome is then unknown.
        d.link.call("BLPOP", "nothing", 0, on_reply=in_flight.append)
        d.link.flush()
        redis.kill()
        d.until(lambda: d.link.state is LinkState.DOWN, "down")
        assert "closed the connection" in d.downs[0] or "lost" in d.downs[0]
        assert len(in_flight) == 1
        lost = in_flight[0]
        assert isinstance(lost, Unavailable) and lost.sent
        refused: list[Reply] = []
        d.link.call("GET", "a", on_reply=refused.append)  # refused at once, not queued
        assert len(refused) == 1
        assert isinstance(refused[0], Unavailable) and not refused[0].sent
        # It keeps trying, further apart each time, while nothing listens.
        d.until(lambda: len(d.downs) >= 3, "retried")
        redis.start()
        d.until(lambda: d.link.state is LinkState.READY and d.ups == 2, "reconnected")
        assert d.call("SET", "b", "2") == b"OK"  # (no AOF: what it had is gone)


def test_nothing_listening_is_down_with_a_reason_and_a_growing_backoff() -> None:
    port = free_port()
    with driver(f"redis://127.0.0.1:{port}") as d:
        waits: list[float] = []
        for attempt in range(1, 4):
            d.until(lambda n=attempt: len(d.downs) >= n, f"failed {attempt} times")  # type: ignore[misc]
            wake = d.link.wake_at
            assert wake is not None
            waits.append(wake - time.monotonic())
        assert f"127.0.0.1:{port}" in d.downs[0] and "ECONNREFUSED" in d.downs[0]
        assert waits[0] < waits[1] < waits[2]  # 0.05, 0.1, 0.2 s (less the time to get here)
        assert d.ups == 0


@contextmanager
def fake_redis(answer: bytes | None) -> Iterator[int]:
    """A listener that answers the first thing it reads with `answer` (None: never
    answers), and holds the connection open."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)
        try:
            if conn.recv(65536) and answer is not None:
                conn.sendall(answer)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        for conn in held:
            conn.close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not RESP"),  # a peer that is not Redis
        (None, "no reply"),  # one that never answers: given up after the reply timeout
    ],
)
def test_a_peer_that_is_not_a_working_redis_is_dropped(answer: bytes | None, reason: str) -> None:
    with fake_redis(answer) as port, driver(f"redis://127.0.0.1:{port}", reply_timeout=0.3) as d:
        d.until(lambda: d.link.state is LinkState.READY, "connected")
        got: list[Reply] = []
        d.link.call("PING", on_reply=got.append)
        d.until(lambda: bool(got), "failed")
        assert isinstance(got[0], Unavailable) and got[0].sent
        assert reason in d.downs[0]


def test_a_host_that_does_not_resolve_is_a_clear_error() -> None:
    with pytest.raises(ChatctlError, match="cannot resolve the Redis host"):
        Driver(RedisUrl("no-such-host.invalid", 6379))
