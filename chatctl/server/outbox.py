"""What one loop turn sends: frames queued on connections, a Batch per room, and the list of
connections to write at the end of the turn.

A room's frames of one turn share one Batch (batch.py), appended once to each member's queue.
A batch stops growing at the end of the turn, or as soon as a member's queue gets a frame of
another batch after it, so every member sees every frame in the order the hub produced it.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatctl.server.batch import Batch
from chatctl.server.peer import Peer


class Outbox:
    __slots__ = ("_batches", "_open", "_peers", "dirty", "high_water")

    def __init__(self, peers: dict[int, Peer], high_water: int) -> None:
        self._peers = peers
        self.high_water = high_water  # one connection's queue: past it, a slow consumer
        self.dirty: list[Peer] = []  # connections to write at the end of this turn
        self._batches: dict[int, Batch] = {}  # id(recipients) -> this turn's open batch
        self._open: list[Batch] = []

    def schedule(self, peer: Peer) -> None:
        """Write `peer` at the end of this turn."""
        if not peer.scheduled:
            peer.scheduled = True
            self.dirty.append(peer)

    def enqueue(self, peer: Peer, data: bytes) -> None:
        """A frame for `peer` alone."""
        out = peer.out
        if out and type(out[-1]) is Batch and out[-1].open:
            out[-1].add_private(data, peer.cid)  # keeps its place among the room's frames
        else:
            out.append(data)
        peer.out_size += len(data)
        if not peer.scheduled and (not peer.want_write or peer.out_size > self.high_water):
            peer.scheduled = True
            self.dirty.append(peer)

    def to_room(self, to: Sequence[int], data: bytes, skip: int) -> None:
        """A frame for every connection in `to` but `skip`."""
        batch = self._batches.get(id(to))
        if batch is None or batch.targets is not to or not batch.open:
            batch = self._new_batch(to)
        batch.add(data, skip)

    def _new_batch(self, to: Sequence[int]) -> Batch:
        batch = Batch(to)
        self._batches[id(to)] = batch
        self._open.append(batch)
        peers = self._peers
        dirty = self.dirty
        for cid in to:
            peer = peers[cid]
            out = peer.out
            if out:
                last = out[-1]
                if type(last) is Batch:
                    # That batch must not grow any more: its later frames would overtake ours.
                    last.open = False
            out.append(batch)
            if not peer.scheduled and not peer.want_write:
                peer.scheduled = True
                dirty.append(peer)
        return batch

    def take_dirty(self) -> list[Peer]:
        """End of the turn's processing: batches stop growing and their members' queue sizes
        grow by them (a member over the high-water mark is written, and so looked at); the
        connections to write, once each."""
        if self._open:
            peers = self._peers
            high_water = self.high_water
            for batch in self._open:
                batch.open = False
                size = batch.size
                for cid in batch.targets:
                    peer = peers.get(cid)
                    if peer is None:
                        continue
                    peer.out_size += size
                    if peer.out_size > high_water:
                        self.schedule(peer)
            self._open.clear()
            self._batches.clear()
        dirty = self.dirty
        self.dirty = []
        return dirty
