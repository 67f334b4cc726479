"""A connection's answers in the order of its requests, when some come later than others.

docs/protocol.md §6.7: the server answers one connection's requests in the order it received
them. A node of a cluster answers a Say when the shared log brings it back, later than it
could answer the requests after it; `InOrder` keeps the order. A request answered later takes
a `Slot` (`later`); while a connection has one open, the loop hands none of its requests but
Says to the hub (`stalled`, resumed through `resume` when its last answer is out), and the
answers to its Says made meanwhile take their place behind (`hold`). `answered` fills a slot
and sends what is then due, in order.

Sans-IO: `dispatch` sends deliveries, `alive(cid)` says whether a connection is still there
(what was for one that has gone is dropped), `resume(peer)` hands a stalled connection back to
the loop. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from chatctl.server.hub import Delivery

P = TypeVar("P")


class Slot:
    """A place among a connection's answers: `out`, once `done`."""

    __slots__ = ("done", "out")

    def __init__(self, out: list[Delivery] | None = None) -> None:
        self.out = out or []
        self.done = out is not None


def answers(d: Delivery, cid: int) -> bool:
    """Whether `d` is for connection `cid` alone: an answer to its request. (A room's frame
    that skips `cid` is not, even when `cid` is the room's only member.)"""
    return d.to == (cid,) and d.skip != cid


class InOrder(Generic[P]):
    def __init__(
        self,
        dispatch: Callable[[list[Delivery]], None],
        alive: Callable[[int], bool],
        resume: Callable[[P], None],
    ) -> None:
        self._dispatch = dispatch
        self._alive = alive
        self._resume = resume
        # The connections with an answer still to come: their slots, oldest first.
        self.waiting: dict[int, deque[Slot]] = {}
        self._stalled: dict[int, P] = {}

    def later(self, cid: int, slot: Slot) -> None:
        """Connection `cid` made a request whose answer goes in `slot`, later."""
        queue = self.waiting.get(cid)
        if queue is None:
            queue = self.waiting[cid] = deque()
        queue.append(slot)

    def hold(self, cid: int, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries of a request of `cid` answered at once while `cid` waits for an
        earlier answer: its own wait behind that one; the rest (to others) goes now."""
        mine = [d for d in deliveries if answers(d, cid)]
        if not mine:
            return deliveries
        self.waiting[cid].append(Slot(mine))
        return [d for d in deliveries if not answers(d, cid)]

    def stalled(self, cid: int, peer: P) -> None:
        """The loop stopped handing `cid`'s requests on: `resume(peer)` once it may again."""
        self._stalled[cid] = peer

    def answered(self, cid: int, slot: Slot, out: list[Delivery]) -> None:
        """`slot`'s request is answered: `out`, whose frames for `cid` alone are the answer
        (the others go at once). What is then due goes out, in order."""
        queue = self.waiting[cid]
        if queue[0] is slot and (len(queue) == 1 or not queue[1].done):
            # Its turn, and nothing ready behind it (the common case): out as it is.
            queue.popleft()
            if not queue:
                self._done(cid)
            self._send(cid, out)
            return
        self._dispatch([d for d in out if not answers(d, cid)])
        slot.out = [d for d in out if answers(d, cid)]
        slot.done = True
        due: list[Delivery] = []
        while queue and queue[0].done:
            due += queue.popleft().out
        if not queue:
            self._done(cid)
        self._send(cid, due)

    def _send(self, cid: int, out: list[Delivery]) -> None:
        if not out:
            return
        if not self._alive(cid):  # gone (or taken over) since: its answers go nowhere
            out = [d for d in out if not answers(d, cid)]
        self._dispatch(out)

    def _done(self, cid: int) -> None:
        del self.waiting[cid]
        peer = self._stalled.pop(cid, None)
        if peer is not None:
            self._resume(peer)
