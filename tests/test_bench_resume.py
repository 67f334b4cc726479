"""A bench connection that resumes on another node of a cluster (`ChatctlResume`): every
message of its room is verified once, whatever the live messages that came before the replay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl import protocol as p
from chatctl.bench.adapters import ChatctlResume
from chatctl.bench.payload import make_payload

ROOM = "bench"


def message(seq: int, *, history: bool) -> bytes:
    text = make_payload(1, seq, 0, 32).decode()
    return p.encode(p.Message(room=ROOM, seq=seq, ts=0, sender="pub", text=text, history=history))


def replay(after: int, limit: int, head: int) -> bytes:
    """What a node answers to Join(after) or History(after, limit): oldest first, at most
    `limit`, then HistoryEnd with the room's head."""
    seqs = range(after + 1, min(after + limit, head) + 1)
    end = p.encode(p.HistoryEnd(room=ROOM, head=head))
    return b"".join(message(s, history=True) for s in seqs) + end


@given(
    after=st.integers(0, 30),
    missed=st.integers(0, 30),
    live_before=st.integers(0, 30),
    live_after=st.integers(1, 10),
    limit=st.integers(1, 12),
    piece=st.integers(1, 200),
)
def test_property_a_moved_subscriber_verifies_every_message_once_in_order(
    after: int, missed: int, live_before: int, live_after: int, limit: int, piece: int
) -> None:
    """The session moved while still a member, so the room's live messages flow from the
    Welcome on (`live_before` of them, up to the head the Join then reports) before the
    Join's replay; the replay stops at `limit` and the subscriber pages on. Every seq after
    `after` is verified exactly once, in order; the live ones after the set-up go on to the
    worker's scan (`rest`)."""
    head = after + missed + live_before  # the Join's head: the live ones were stored first
    setup = ChatctlResume("sub", ROOM, "token", after, True)
    server = p.Connection(p.Role.SERVER)
    server.receive_data(setup.first)
    assert isinstance(server.next_event(), p.Hello)
    welcome = p.Welcome(
        protocol=p.PROTOCOL_VERSION,
        server="x",
        version="x",
        nick="sub",
        token="t",
        limits={"replay_limit": limit},
    )
    inbox = p.encode(welcome) + b"".join(
        message(s, history=False) for s in range(head - live_before + 1, head + 1)
    )
    done, rest = False, b""
    while inbox:  # every byte the node sends goes to the set-up, a piece at a time
        data, inbox = inbox[:piece], inbox[piece:]
        out, done = setup.feed(data)
        if out:
            server.receive_data(out)
        while (event := server.next_event()) is not p.NEED_DATA:
            if isinstance(event, p.Join):
                assert event.after == after
                inbox += replay(after, limit, head)
            elif isinstance(event, p.History):
                assert event.after is not None
                inbox += replay(event.after, event.limit, head)
        if done:
            rest = setup.rest + inbox
            break
    if not done:  # every byte taken: the set-up ends once more (the live stream) arrives
        inbox = b"".join(message(s, history=False) for s in range(head + 1, head + 1 + live_after))
        out, done = setup.feed(inbox)
        rest = setup.rest
    assert done
    assert list(setup.replayed) == [(1, s) for s in range(after + 1, head + 1)]
    assert setup.after == head
    assert b"history" not in rest  # no replayed frame left over for the scan
