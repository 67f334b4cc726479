"""Node leases, decided by the shared log itself: which nodes are gone, at which entry.

Every stream entry's id starts with Redis's clock (`1712345678901-0`: milliseconds), the same
for every node that reads it. A node appends at least one entry every lease / 5 (its beat: a
MarkEntry when it has nothing else to append), so a node whose last entry is more than a
lease older than the entry being applied has stopped: it is gone, and every node, reading
the same entries, finds it gone at the same entry. No node's clock and no extra key in Redis
take part: the decision is as deterministic as the rest of the log.

When the log itself was silent for more than half a lease (Redis down or restarted, or every
node stopped), nobody could append: every known node's lease starts again at the entry that
ends the silence, so an outage of Redis does not make every node gone at once.

Sans-IO: `Leases.advance(clock_ms, node)` for each stream entry, in log order.
"""

from __future__ import annotations

GONE_KEPT = 4096  # gone node ids remembered (their late entries are skipped)


def stream_ms(stream_id: bytes) -> int:
    """The milliseconds part of a stream id (0 when it has none: never from Redis)."""
    head = stream_id.partition(b"-")[0]
    return int(head) if head.isdigit() else 0


class Leases:
    def __init__(self, lease_ms: int) -> None:
        self.lease_ms = lease_ms
        self.silence_ms = lease_ms // 2
        self.clock = 0  # the latest entry's time
        self.last: dict[str, int] = {}  # node -> the time of its latest entry
        self.gone: dict[str, None] = {}  # nodes found gone, oldest first

    def advance(self, clock_ms: int, node: str | None) -> list[str]:
        """The stream entry at `clock_ms` (appended by `node`, None when unreadable) is next:
        the nodes whose lease ended before it, in the order they were first seen. Its node
        counts as alive from it on, unless it is gone (then its entries are to be skipped:
        `is_gone`)."""
        clock_ms = max(clock_ms, self.clock)  # a stream id's clock never goes back
        if self.clock and clock_ms - self.clock > self.silence_ms:
            for known in self.last:
                self.last[known] = clock_ms
        self.clock = clock_ms
        expired = [n for n, seen in self.last.items() if clock_ms - seen > self.lease_ms]
        for n in expired:
            del self.last[n]
            self.gone[n] = None
            if len(self.gone) > GONE_KEPT:
                del self.gone[next(iter(self.gone))]
        if node is not None and node not in self.gone:
            self.last[node] = clock_ms
        return expired

    def is_gone(self, node: str) -> bool:
        return node in self.gone

    def load(self, clock_ms: int, last: list[tuple[str, int]], gone: list[str]) -> None:
        """The leases as a snapshot holds them (cluster/snapshot.py)."""
        self.clock = clock_ms
        self.last = dict(last)
        self.gone = dict.fromkeys(gone)
