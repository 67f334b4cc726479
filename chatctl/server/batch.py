"""A room's frames of one loop turn, shared by every member's output queue.

A Batch is appended to each member's queue once, messages are added to it in O(1) whatever
the room's size, and its bytes are joined once and the same bytes object is sent to every
member. A member with frames of its own in the batch gets that join spliced: the sender of a
message has it cut out, the recipient of a private frame (an Ack) has it inserted exactly where
it was sent among the room's frames.
"""

from __future__ import annotations

from collections.abc import Sequence


class Batch:
    __slots__ = ("_common", "edits", "open", "public", "size", "targets")

    def __init__(self, targets: Sequence[int]) -> None:
        self.targets = targets  # the recipients; kept alive so its id() stays unique
        self.public: list[bytes] = []  # what every member without edits gets, in order
        self.size = 0  # bytes in `public`: the offset where the next part goes
        # Per member with parts of its own: (offset, length, data) in order; data None cuts
        # public[offset:offset+length] out (its own message), else data is inserted at offset.
        self.edits: dict[int, list[tuple[int, int, bytes | None]]] = {}
        self.open = True  # parts may still be added (until the turn ends or order forbids)
        self._common: bytes | None = None

    def add(self, data: bytes, skip: int = -1) -> None:
        """A frame for every member but `skip`."""
        if skip != -1:
            self._edit(skip, (self.size, len(data), None))
        self.public.append(data)
        self.size += len(data)

    def add_private(self, data: bytes, cid: int) -> None:
        """A frame for `cid` only, at this point of the sequence."""
        self._edit(cid, (self.size, 0, data))

    def _edit(self, cid: int, edit: tuple[int, int, bytes | None]) -> None:
        edits = self.edits.get(cid)
        if edits is None:
            self.edits[cid] = [edit]
        else:
            edits.append(edit)

    def data_for(self, cid: int) -> bytes:
        """The bytes for member `cid`: the shared join, or for a member with edits, the shared
        join spliced (in time proportional to its own parts, not to the batch)."""
        # Once a member has its bytes, nothing may be added: that member would never see it.
        self.open = False
        common = self._common
        if common is None:
            common = self._common = b"".join(self.public)
        edits = self.edits.get(cid)
        if edits is None:
            return common
        view = memoryview(common)
        pieces: list[bytes | memoryview] = []
        pos = 0
        for offset, length, data in edits:
            pieces.append(view[pos:offset])
            if data is not None:
                pieces.append(data)
            pos = offset + length
        pieces.append(view[pos:])
        return b"".join(pieces)
