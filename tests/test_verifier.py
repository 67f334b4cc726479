"""The key-derivation pool: fair turns across client addresses, coalesced identical checks,
the cache of recent successes, and its bounds."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.passwords import hash_password
from chatctl.server import verifier
from chatctl.server.hub import Busy, Check
from chatctl.server.verifier import FairQueue, Verifier

CHEAP = hash_password("right-password", n=1 << 10)


@given(st.lists(st.sampled_from("abcd"), max_size=40))
def test_fair_queue_serves_addresses_in_turn(clients: list[str]) -> None:
    fair = FairQueue()
    for i, client in enumerate(clients):
        fair.put(client, Check(i, "", ""))
    served = []
    for _ in clients:
        job = fair.get()
        assert job is not None
        served.append(job)
    # Each address's checks in the order they came; and between two turns of one address,
    # every other address with checks still waiting has a turn.
    order = [client for _, client in served]
    for client in set(clients):
        mine = [check.cid for check, c in served if c == client]
        assert mine == sorted(mine)
        turns = [i for i, c in enumerate(order) if c == client]
        for p, q in itertools.pairwise(turns):
            still_waiting = set(order[p + 1 :]) - {client}
            assert still_waiting <= set(order[p + 1 : q])
    fair.close()
    assert fair.get() is None


@pytest.fixture()
def pool() -> Iterator[tuple[Verifier, socket.socket]]:
    wake_r, wake_w = socket.socketpair()
    v = Verifier(wake_w, lambda cid: f"client{cid % 2}")
    yield v, wake_r
    v.close()
    wake_r.close()
    wake_w.close()


def outcomes(v: Verifier, wake: socket.socket, count: int) -> dict[int, bool | str]:
    got: dict[int, bool | str] = {}
    deadline = time.monotonic() + 10
    wake.settimeout(1)
    while len(got) < count:
        assert time.monotonic() < deadline, got
        try:
            wake.recv(64)
        except TimeoutError:
            pass
        got.update(v.done())
    return got


def test_identical_checks_coalesce_then_the_cache_answers(
    pool: tuple[Verifier, socket.socket],
) -> None:
    v, wake = pool
    assert all(v.submit(Check(cid, "right-password", CHEAP)) is None for cid in range(5))
    assert v.submit(Check(9, "wrong-password", CHEAP)) is None
    got = outcomes(v, wake, 6)
    assert got == {0: True, 1: True, 2: True, 3: True, 4: True, 9: False}
    assert v.submit(Check(10, "right-password", CHEAP)) is True  # remembered
    assert v.submit(Check(11, "wrong-password", CHEAP)) is None  # never remembered
    assert outcomes(v, wake, 1) == {11: False}


def test_hashing_goes_through_the_pool(pool: tuple[Verifier, socket.socket]) -> None:
    v, wake = pool
    assert v.submit(Check(1, "a-new-password", "")) is None
    [(cid, hashed)] = outcomes(v, wake, 1).items()
    assert cid == 1 and isinstance(hashed, str) and hashed.startswith("scrypt$")


def test_past_its_bounds_the_pool_says_busy(
    pool: tuple[Verifier, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    v, wake = pool
    monkeypatch.setattr(verifier, "PER_CLIENT_MAX", 2)
    stored = [hash_password(f"pw{i}", n=1 << 10) for i in range(3)]
    for i in range(2):
        assert v.submit(Check(2 * i, "guess", stored[i])) is None  # client0
    with pytest.raises(Busy, match="too many logins at once"):
        v.submit(Check(4, "guess", stored[2]))
    assert v.submit(Check(1, "guess", stored[2])) is None  # client1 is not held up
    outcomes(v, wake, 3)
    assert v.submit(Check(6, "guess", stored[2])) is None  # client0 again, once answered
