"""Resend detection without SQL for the common case, a new id: a growing Bloom filter."""

from __future__ import annotations

from collections.abc import Callable

from abloom import BloomFilter


class IdFilter:
    """A Bloom filter of (sender_key, msg_id) pairs that grows by adding layers: "no" is
    certain, "maybe" is wrong about 0.02% of the time per full layer. Nothing is ever removed
    (a trimmed id only costs a false "maybe"): the store replaces it with a fresh one once it
    holds many more ids than are stored. It lives in memory: a restart rebuilds it.

    Why these numbers: every false "maybe" costs a search of the ids not yet indexed and an
    SQL lookup (~30-50 us on the server, where a whole message costs ~8 us), so the rate
    matters more than the memory: ~0.02% per layer (about 22 bits per id: 2.7 MB for a
    million ids; at 0.2% a busy server's false "maybe"s cost ~0.2 us a message), layers
    growing fourfold so that few of them can be wrong at once.

    The layers are abloom's split-block Bloom filters (C): the bits of an id all lie in one
    64-byte block, so an add or a lookup touches one cache line, where a classic filter
    touches one per probe (12 at this rate). On the server at full speed, beside everything
    else in the cache, rbloom's classic filter cost ~1.2 us a message (an add and a lookup
    per layer; A/B against no filter), this one ~0.4. The store adds on its hot path
    through `add`, the newest layer's own method (no Python call in between), and says how
    many it added with `added`, which grows the filter (and so rebinds `add`)."""

    FALSE_POSITIVES = 0.0002
    GROWTH = 4
    add: Callable[[tuple[str, str]], bool]

    def __init__(self, capacity: int) -> None:
        self.layers: list[BloomFilter] = []  # the newest last
        self._capacity = 0
        self._room = 0
        self.count = 0  # ids added
        self._grow(max(capacity, 8))

    def _grow(self, capacity: int) -> None:
        layer = BloomFilter(capacity, self.FALSE_POSITIVES)
        self.layers.append(layer)
        self._capacity = self._room = capacity
        # The newest layer's add: takes a (sender_key, msg_id) pair. Call `added` after.
        self.add = layer.add

    def added(self, count: int) -> None:
        """`count` pairs went in through `add`: grow once the newest layer is full (a layer
        may take one batch more than its capacity, a little more often wrong)."""
        self.count += count
        self._room -= count
        if self._room <= 0:
            self._grow(self.GROWTH * self._capacity)

    def add_many(self, pairs: list[tuple[str, str]]) -> None:
        """Add every pair (growing as needed): in C, a batch at a time."""
        start = 0
        while start < len(pairs):
            part = pairs[start : start + max(self._room, 1)]
            self.layers[-1].update(part)
            start += len(part)
            self.added(len(part))

    def may_contain(self, key: str, msg_id: str) -> bool:
        pair = (key, msg_id)
        return any(pair in layer for layer in self.layers)
