"""A connection's answers in the order of its requests (chatctl/server/answers.py), held to a
model by a hypothesis state machine: requests answered at once or later, in any order of
resolution, for two connections, one of which may go away. Every answer reaches its
connection exactly once and in the order of the requests; frames for others are never held;
a stalled connection is resumed exactly when its last answer is out."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatctl.server.answers import InOrder, Slot
from chatctl.server.hub import Delivery

CIDS = st.sampled_from([1, 2])
OTHER = 99  # a member of the rooms, never waiting


class AnswersMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Delivery] = []
        self.resumed: list[str] = []
        self.gone: set[int] = set()
        self.order: InOrder[str] = InOrder(
            self.sent.extend, lambda cid: cid not in self.gone, self.resumed.append
        )
        self.requests = 0
        self.asked: dict[int, list[bytes]] = {1: [], 2: []}  # each connection's, in order
        self.open: list[tuple[int, Slot, bytes]] = []
        self.stalled: set[int] = set()
        self.room_frames: list[bytes] = []

    def _answer(self, cid: int) -> tuple[bytes, list[Delivery]]:
        self.requests += 1
        tag = b"%d:%d" % (cid, self.requests)
        room = b"room-" + tag
        self.room_frames.append(room)
        return tag, [Delivery((cid, OTHER), room, cid), Delivery((cid,), tag)]

    @rule(cid=CIDS)
    def request_answered_later(self, cid: int) -> None:
        if cid in self.gone:
            return  # a connection that has gone sends nothing more
        tag, _ = self._answer(cid)
        slot = Slot()
        self.order.later(cid, slot)
        self.asked[cid].append(tag)
        self.open.append((cid, slot, tag))

    @rule(cid=CIDS)
    def request_answered_at_once(self, cid: int) -> None:
        if cid in self.gone:
            return
        tag, out = self._answer(cid)
        self.asked[cid].append(tag)
        if cid in self.order.waiting:
            out = self.order.hold(cid, out)
            assert [d.data for d in out] == [b"room-" + tag]  # the room's frame goes now
        self.sent.extend(out)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def an_answer_comes(self, data: st.DataObject) -> None:
        cid, slot, tag = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        room = b"room-" + tag
        self.order.answered(cid, slot, [Delivery((cid, OTHER), room, cid), Delivery((cid,), tag)])
        assert any(d.data == room for d in self.sent)  # never held

    @precondition(lambda self: self.order.waiting)
    @rule(data=st.data())
    def stall(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.order.waiting)))
        self.order.stalled(cid, f"peer{cid}")
        self.stalled.add(cid)

    @rule()
    def connection_two_goes(self) -> None:
        self.gone.add(2)

    @invariant()
    def answers_in_order_once_each(self) -> None:
        for cid in (1, 2):
            got = [d.data for d in self.sent if d.to == (cid,)]
            asked = self.asked[cid]
            if cid in self.gone:
                assert len(set(got)) == len(got)  # a prefix was sent before it went
                assert got == asked[: len(got)]
                continue
            # Exactly the answers before its first one still to come, in order.
            pending = [tag for c, _, tag in self.open if c == cid]
            cut = min((asked.index(tag) for tag in pending), default=len(asked))
            assert got == asked[:cut]

    @invariant()
    def resumed_when_done(self) -> None:
        for cid in list(self.stalled):
            if cid not in self.order.waiting:
                assert f"peer{cid}" in self.resumed
                self.stalled.discard(cid)
                self.resumed.remove(f"peer{cid}")
        assert not self.resumed  # nobody resumed while still waiting, nor twice


TestAnswers = AnswersMachine.TestCase
