"""The accounts a cluster's log holds, for `chatctl accounts --data redis://...`.

An operator's change is appended to the log as an `AccountEntry`, like a node's proposal, and
its outcome is what every node makes of it: `LogAccounts` rebuilds the accounts by applying
every account entry of the log, from its start, with the nodes' own rule
(entries.apply_account) and skipping what the nodes skip (a bad stream entry, and what a node
appended after its lease ended: cluster/leases.py). Reading up to the change's own entry then
gives its outcome: "exists already" when another entry took the name first. `LogAccounts` is
sans-IO; `ClusterAccounts` drives it over a blocking connection (a short-lived command, not a
node's loop).
"""

from __future__ import annotations

import re
import secrets
import time

from chatctl.cluster.blocking import BlockingRedis
from chatctl.cluster.entries import (
    FIELD,
    SETTINGS,
    STREAM,
    AccountEntry,
    Read,
    apply_account,
    encode_entries,
    read_entries,
)
from chatctl.cluster.leases import Leases, stream_ms
from chatctl.cluster.resp import RedisError
from chatctl.cluster.url import RedisUrl
from chatctl.errors import ChatctlError
from chatctl.store.registry import MemoryRegistry

DEFAULT_LEASE_MS = 10_000  # when no node has started yet: no node's entry to skip anyway
READ_COUNT = 1024


class LogAccounts:
    def __init__(self, lease_ms: int) -> None:
        self.registry = MemoryRegistry()
        self.leases = Leases(lease_ms)
        self.last_id = b"0-0"  # the last stream id read

    def feed(self, reads: list[Read], mine: bytes = b"") -> str | None:
        """Apply `reads`, in log order (stopping after stream entry `mine`, when among them):
        the outcome of `mine`'s change ("" done, else why not), or None if not read yet."""
        leases = self.leases
        for read in reads:
            self.last_id = read.id
            entries = read.entries
            node = entries[0].node if entries else None  # one XADD: one node's
            leases.advance(stream_ms(read.id), node)
            if node is None or leases.is_gone(node):
                continue  # as every node skips it
            outcome = ""
            for entry in entries:
                if type(entry) is AccountEntry:
                    outcome = apply_account(self.registry, entry)
            if read.id == mine:
                return outcome
        return None


def lease_of(settings: object) -> int:
    """The cluster's lease in milliseconds, from its settings' value (GET chatctl:settings)."""
    if settings is None:
        return DEFAULT_LEASE_MS
    found = re.search(rb"node_lease_ms=(\d+)", settings) if isinstance(settings, bytes) else None
    if found is None:
        raise ChatctlError(f"{SETTINGS.decode()} holds no lease: {settings!r:.80}")
    return int(found[1])


class ClusterAccounts:
    """The accounts of the cluster at `url`, read from its log; `change` appends one."""

    def __init__(self, url: RedisUrl) -> None:
        self.url = url
        self._redis = BlockingRedis(url)
        try:
            self.log = LogAccounts(lease_of(self._redis.call(b"GET", SETTINGS)))
        except BaseException:
            self._redis.close()
            raise

    def read(self, mine: bytes = b"") -> str | None:
        """Read the log to its end (or up to stream entry `mine`): `LogAccounts.feed`'s."""
        while True:
            reply = self._redis.call(
                b"XREAD", b"COUNT", READ_COUNT, b"STREAMS", STREAM, self.log.last_id
            )
            if isinstance(reply, RedisError):
                raise ChatctlError(f"Redis at {self.url}: XREAD failed: {reply}")
            try:
                reads = read_entries(reply)
            except ValueError as exc:
                raise ChatctlError(f"Redis at {self.url}: {exc}") from None
            outcome = self.log.feed(reads, mine)
            if outcome is not None or not reads:
                return outcome

    def change(self, action: str, name: str, password_hash: str) -> str:
        """Append the operator's change to account `name`; its outcome, as every node
        applies it ("" done, else why not)."""
        entry = AccountEntry(
            f"cli-{secrets.token_hex(4)}",
            1,
            int(time.time() * 1000),
            action,
            name,
            password_hash,
            "",
        )
        stream_id = self._redis.call(b"XADD", STREAM, b"*", FIELD, encode_entries([entry]))
        if not isinstance(stream_id, bytes):
            raise ChatctlError(f"Redis at {self.url}: XADD failed: {stream_id!r:.80}")
        outcome = self.read(stream_id)
        if outcome is None:
            raise ChatctlError(
                f"the change was appended to the log at {self.url} as entry "
                f"{stream_id.decode()}, but it could not be read back"
            )
        return outcome

    def close(self) -> None:
        self._redis.close()
