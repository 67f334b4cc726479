"""Resume after a dropped connection: exactly the missed messages, in order, once.

The drop is real: a TCP proxy between client and server cuts the connection and refuses new
ones for a while, as a blinking network would, while the server keeps running. The paging
logic (_CatchUp) also gets a property test against a model of the server's replies.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl.client import AnyEvent, Backoff, Client, Disconnected, Reconnected
from chatctl.client.session import _CatchUp
from chatctl.protocol import Gap, HistoryEnd, Message
from tests.clients import WAIT, wait_for
from tests.proxy import Proxy, proxy_to
from tests.servers import running_server


def alice_behind(proxy: Proxy) -> Client:
    """alice, connected through `proxy` to #lobby with a quick reconnect, her join done."""
    alice = Client(
        "127.0.0.1",
        proxy.port,
        nick="alice",
        rooms=["lobby"],
        reconnect=True,
        backoff=Backoff(base=0.05, cap=0.2),
    )
    alice.connect()
    wait_for(alice, HistoryEnd)
    return alice


def test_a_blink_delivers_exactly_the_missed_messages_across_pages() -> None:
    # replay_limit 5: twelve missed messages take three pages of resume.
    with (
        running_server(replay_limit=5) as addr,
        proxy_to(addr) as proxy,
        alice_behind(proxy) as alice,
        Client(*addr, nick="bob") as bob,
    ):
        bob.connect()
        bob.say("lobby", "seen before").wait(WAIT)
        wait_for(alice, Message, lambda m: m.text == "seen before")
        proxy.blocked.set()
        proxy.cut()
        wait_for(alice, Disconnected)
        for i in range(12):
            bob.say("lobby", f"missed {i}")
        assert bob.wait_acked(WAIT)
        proxy.blocked.clear()
        wait_for(alice, Reconnected)
        events: list[AnyEvent] = []
        wait_for(alice, HistoryEnd, seen=events)
        bob.say("lobby", "live").wait(WAIT)
        wait_for(alice, Message, lambda m: m.text == "live", seen=events)
        replayed = [e for e in events if isinstance(e, Message)]
        assert [m.text for m in replayed] == [f"missed {i}" for i in range(12)]
        assert [m.seq for m in replayed] == list(range(2, 14))
        assert not any(m.history for m in replayed)  # missed, not old: the stream goes on
        assert alice.last_seq("lobby") == 14


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, int, int, list[int]]:
    cursor = draw(st.integers(0, 30))
    missed = draw(st.integers(0, 40))
    trimmed_to = draw(st.integers(0, cursor + missed + 1))  # seqs below this are gone
    page = draw(st.integers(1, 8))
    live = draw(st.integers(0, 10))
    # After which page each live message arrives (the live stream interleaves with pages).
    arrivals = sorted(draw(st.lists(st.integers(0, 10), min_size=live, max_size=live)))
    return cursor, missed, trimmed_to, page, arrivals


@given(scenarios())
def test_catchup_delivers_every_stored_message_once_in_order(
    scenario: tuple[int, int, int, int, list[int]],
) -> None:
    cursor, missed, trimmed_to, page, arrivals = scenario
    head = cursor + missed  # the room's head when the client rejoins
    catchup = _CatchUp(cursor=cursor)
    delivered: list[int] = []
    next_live = head + 1
    after = cursor
    for turn in range(1000):  # the model server answers Join(after) then History(after) pages
        while arrivals and arrivals[0] <= turn:  # live messages that overtake this page
            arrivals.pop(0)
            catchup.live(next_live)
            delivered.append(next_live)
            next_live += 1
        first = after + 1
        if first < trimmed_to:
            catchup.gap(Gap(room="r", first=first, last=trimmed_to - 1))
            first = trimmed_to
        current_head = next_live - 1
        for seq in range(first, min(first + page, current_head + 1)):
            if catchup.replayed(seq):
                delivered.append(seq)
        if not catchup.more(current_head):
            break
        after = catchup.cursor
    else:
        raise AssertionError("the catch-up never ended")
    for _ in arrivals:
        catchup.live(next_live)
        delivered.append(next_live)
        next_live += 1
    expected = [s for s in range(cursor + 1, next_live) if s >= trimmed_to or s > head]
    assert sorted(delivered) == expected  # every stored message once
    replay = [s for s in delivered if s <= head]
    assert replay == sorted(replay)  # the replayed part in order


def test_a_server_that_lost_its_history_is_resumed_from_its_new_head() -> None:
    """A `--data :memory:` restart numbers the room from 1 again: the client must follow, or
    the next resume asks for "after 3" and silently misses the new messages 2 and 3."""
    with (
        running_server() as first,
        running_server() as second,
        proxy_to(first) as proxy,
        alice_behind(proxy) as alice,
        Client(*first, nick="bob") as bob,
        Client(*second, nick="carol") as carol,
    ):
        bob.connect()
        for i in range(3):
            bob.say("lobby", f"old {i}").wait(WAIT)
        wait_for(alice, Message, lambda m: m.text == "old 2")
        # The "restart": the same address now leads to a server with no history.
        proxy.upstream = second
        proxy.cut()
        wait_for(alice, Reconnected)
        wait_for(alice, HistoryEnd)
        assert alice.last_seq("lobby") == 0
        carol.connect()
        carol.say("lobby", "new 1").wait(WAIT)
        wait_for(alice, Message, lambda m: m.text == "new 1")
        proxy.blocked.set()
        proxy.cut()
        wait_for(alice, Disconnected)
        carol.say("lobby", "new 2").wait(WAIT)
        proxy.blocked.clear()
        missed = wait_for(alice, Message, lambda m: m.text == "new 2")
        assert missed.seq == 2
