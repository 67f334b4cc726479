"""The accounts a cluster's log holds, for `chatctl accounts --data redis://...`.

An operator's change is appended to the log as an `AccountEntry`, like a node's proposal, and
its outcome is what every node makes of it: `LogAccounts` rebuilds the accounts as a node
does, from the current snapshot's (cluster/snapshot.py; the log below it is trimmed) and then
every account entry of the log after it, with the nodes' own rule (entries.apply_account),
skipping what the nodes skip (a bad stream entry, and what a node appended after its lease
ended: cluster/leases.py). The change is appended as a node appends (the APPEND script, so
that the entry names the one before it). Reading up to the change's own entry then
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
    APPEND,
    LAST,
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
from chatctl.cluster.snapshot import POINTER, Snapshot, chunks_key, decode_snapshot, read_pointer
from chatctl.errors import ChatctlError
from chatctl.redis_url import RedisUrl
from chatctl.store.registry import MemoryRegistry

DEFAULT_LEASE_MS = 10_000  # when no node has started yet: no node's entry to skip anyway
READ_COUNT = 1024
LOAD_TRIES = 10  # snapshots superseded while being read, before giving up


class Hole(Exception):
    """The log lost entries after the last one read (trimmed meanwhile): start again from
    the current snapshot."""


class LogAccounts:
    def __init__(self, lease_ms: int) -> None:
        self.registry = MemoryRegistry()
        self.leases = Leases(lease_ms)
        self.last_id = b"0-0"  # the last stream id read

    def load(self, snapshot: Snapshot) -> None:
        """Start from `snapshot` (the log is read on from its position), as a node does."""
        self.registry = MemoryRegistry()
        for account in snapshot.accounts:
            self.registry.add_account(account.name, account.password_hash, account.created_ms)
        self.leases.load(snapshot.clock, snapshot.last, snapshot.gone)
        self.last_id = snapshot.position.encode()

    def feed(self, reads: list[Read], mine: bytes = b"") -> str | None:
        """Apply `reads`, in log order (stopping after stream entry `mine`, when among them):
        the outcome of `mine`'s change ("" done, else why not), or None if not read yet."""
        leases = self.leases
        for read in reads:
            if read.prev and read.prev != self.last_id:
                raise Hole(read.prev)
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
            self._load_snapshot()
        except BaseException:
            self._redis.close()
            raise

    def _load_snapshot(self) -> None:
        """The current snapshot, if there is one: its accounts and its place in the log."""
        for _ in range(LOAD_TRIES):
            pointer = read_pointer(self._redis.call(b"HGETALL", POINTER))
            if isinstance(pointer, str):
                raise ChatctlError(f"Redis at {self.url}: the snapshot's pointer: {pointer}")
            if pointer is None:
                return  # no snapshot: the log is whole
            key = chunks_key(pointer.id)
            chunks = [self._redis.call(b"HGET", key, i) for i in range(pointer.chunks)]
            if not all(type(chunk) is bytes for chunk in chunks):
                continue  # superseded (and deleted) while it was read: the next one
            snapshot = decode_snapshot(chunks)  # type: ignore[arg-type]
            if isinstance(snapshot, str):
                raise ChatctlError(f"Redis at {self.url}: the snapshot: {snapshot}")
            self.log.load(snapshot)
            return
        raise ChatctlError(
            f"Redis at {self.url}: no snapshot could be read in {LOAD_TRIES} tries (each was "
            "superseded while it was read)"
        )

    def read(self, mine: bytes = b"") -> str | None:
        """Read the log to its end (or up to stream entry `mine`): `LogAccounts.feed`'s;
        from the current snapshot again if entries were trimmed before they were read."""
        for _ in range(LOAD_TRIES):
            try:
                return self._read(mine)
            except Hole:
                self._load_snapshot()
        raise ChatctlError(
            f"Redis at {self.url}: the log was trimmed faster than it could be read "
            f"({LOAD_TRIES} tries)"
        )

    def _read(self, mine: bytes) -> str | None:
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
        stream_id = self._redis.call(b"EVAL", APPEND, 2, STREAM, LAST, encode_entries([entry]))
        if not isinstance(stream_id, bytes):
            raise ChatctlError(f"Redis at {self.url}: appending failed: {stream_id!r:.80}")
        outcome = self.read(stream_id)
        if outcome is None:
            raise ChatctlError(
                f"the change was appended to the log at {self.url} as entry "
                f"{stream_id.decode()}, but it could not be read back"
            )
        return outcome

    def close(self) -> None:
        self._redis.close()
