"""The hub's side of a cluster, sans-IO: Says proposed on three hubs go to one log, and every
hub applies the log in order (`Hub.apply_say`). Held to a model, one standalone hub handling
the same Says in log order: every node stores exactly what the model stores (the same seqs),
each sender is answered as the model answers it (Ack with the same seq, or MSG_ID_REUSED),
and every member on every node receives each message once, in seq order."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chatctl.cluster.entries import SayEntry
from chatctl.protocol import Ack, Error, ErrorCode, Hello, Join, Message, Say
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Delivery, Hub, Session
from chatctl.store.base import StoredMessage
from chatctl.store.memory import MemoryStore
from tests.test_hub import NOW, flatten

NODES = 3
SENDERS = 2  # per node; a sender's cid is 10 + its index, a member's 1
ROOMS = ["lobby", "dev"]  # every node's member joins these
SAID = [*ROOMS, "ops"]  # and Says go to these: "ops" is created by its first message


class Node:
    def __init__(self, index: int, log: list[tuple[int, int, Session, Say, str]]) -> None:
        self.index = index
        self.hub = Hub(ServerConfig(), MemoryStore())
        self.hub.propose = self.propose
        self.log = log
        self.got: dict[int, list[Any]] = {}  # cid -> events, in order
        self.receive(self.hub.handle(1, Hello(version=1, nick=f"member{index}"), NOW))
        for room in ROOMS:
            self.receive(self.hub.handle(1, Join(room=room), NOW))
        for s in range(SENDERS):
            self.receive(self.hub.handle(10 + s, Hello(version=1, nick=f"s{index}x{s}"), NOW))
        self.got.clear()

    def propose(self, session: Session, name: str, say: Say, now_ms: int) -> list[Delivery]:
        self.log.append((self.index, session.cid, session, say, name))
        return []

    def receive(self, deliveries: list[Delivery]) -> None:
        for cid, event in flatten(deliveries):
            self.got.setdefault(cid, []).append(event)

    def apply(self, origin: int, session: Session, say: Say, name: str) -> None:
        sender = session if origin == self.index else None
        said = SayEntry(
            "node", 0, NOW, name, session.nick, session.sender_key, say.msg_id, say.text, say.action
        )
        self.receive(self.hub.apply_say(said, sender, say.rid))


def fields(m: StoredMessage) -> tuple[object, ...]:
    """A stored message but its sender's key (each hub makes its own tokens)."""
    return (m.room, m.seq, m.ts, m.sender, m.text, m.action, m.msg_id)


STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("say"),
            st.integers(0, NODES - 1),
            st.integers(0, SENDERS - 1),
            st.sampled_from(SAID),
            st.sampled_from(["1", "2", "3"]),
            st.sampled_from(["hi", "ho"]),
        ),
        st.tuples(st.just("apply"), st.integers(1, 4)),
    ),
    max_size=40,
)


@given(STEPS)
def test_every_node_applies_the_log_as_one_hub_would(steps: list[tuple[Any, ...]]) -> None:
    log: list[tuple[int, int, Session, Say, str]] = []
    nodes = [Node(i, log) for i in range(NODES)]
    model = Hub(ServerConfig(), MemoryStore())
    model_cid = {}
    for node in nodes:
        # Each room is counted once: it has members here, or history.
        assert node.hub.room_count == len(set(node.hub.rooms) | set(node.hub.store.rooms()))
        for s in range(SENDERS):
            cid = 100 * (node.index + 1) + s
            model_cid[node.index, 10 + s] = cid
            model.handle(cid, Hello(version=1, nick=f"s{node.index}x{s}"), NOW)
    applied = 0
    answers: dict[tuple[int, int], list[Any]] = {}  # the model's answers, by (node, cid)

    def apply(count: int) -> None:
        nonlocal applied
        for origin, cid, session, say, name in log[applied : applied + count]:
            for node in nodes:
                node.apply(origin, session, say, name)
            # The model hub sees the Say at its place in the log.
            for _, event in flatten(model.handle(model_cid[origin, cid], say, NOW)):
                answers.setdefault((origin, cid), []).append(event)
        applied = min(applied + count, len(log))

    for step in steps:
        if step[0] == "say":
            _, n, s, room, msg_id, text = step
            node = nodes[n]
            # Answered at once (a resend of what is already applied): the model answers it
            # at the same place, since nothing is in the log for it.
            before = len(log)
            node.receive(node.hub.handle_say(10 + s, Say(msg_id=msg_id, room=room, text=text), NOW))
            if len(log) == before:
                for _, event in flatten(
                    model.handle(
                        model_cid[n, 10 + s], Say(msg_id=msg_id, room=room, text=text), NOW
                    )
                ):
                    answers.setdefault((n, 10 + s), []).append(event)
        else:
            apply(step[1])
    apply(len(log))

    for room in SAID:
        want = model.store.read(room, 0, 1000).messages
        for node in nodes:
            stored = node.hub.store.read(room, 0, 1000).messages
            assert list(map(fields, stored)) == list(map(fields, want))
            # Every member receives each message once, in seq order.
            got = [e for e in node.got.get(1, []) if type(e) is Message and e.room == room]
            if room not in ROOMS:
                assert got == []  # nobody is in it
                continue
            assert [(m.seq, m.sender, m.text) for m in got] == [
                (m.seq, m.sender, m.text) for m in want
            ]
    for node in nodes:
        # Each room is counted once: it has members here, or history.
        assert node.hub.room_count == len(set(node.hub.rooms) | set(node.hub.store.rooms()))
        for s in range(SENDERS):
            mine = [
                (type(e).__name__, e.msg_id, getattr(e, "seq", None), getattr(e, "code", None))
                for e in node.got.get(10 + s, [])
                if type(e) in (Ack, Error)
            ]
            wanted = [
                (type(e).__name__, e.msg_id, getattr(e, "seq", None), getattr(e, "code", None))
                for e in answers.get((node.index, 10 + s), [])
                if type(e) in (Ack, Error)
            ]
            assert mine == wanted
            assert all(code in (None, ErrorCode.MSG_ID_REUSED) for *_, code in mine)
