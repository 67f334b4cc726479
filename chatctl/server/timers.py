"""The loop's timers: a heap of (when, item), popped when due. Stale entries are the caller's
to recognise (a connection has one live check at a time; see Server._schedule)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Timers(Generic[T]):
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()  # ties break by order of scheduling, never by item

    def schedule(self, when: float, item: T) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), item))

    def next_at(self) -> float | None:
        """When the earliest timer is due; None when there is none."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> Iterator[tuple[float, T]]:
        """Pop every timer due at `now`, earliest first (timers scheduled meanwhile for a time
        not after `now` are popped too)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            yield when, item
