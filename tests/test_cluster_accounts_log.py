"""The accounts a cluster's log holds, sans-IO: `apply_account`, the one rule every node and
`chatctl accounts` apply, held to a model (names unique in any case; a password change or a
removal needs the account); and `LogAccounts`, which rebuilds them from XREAD replies as a
node would, whatever the replies' split, skipping what a gone node appended."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.cluster.accounts import DEFAULT_LEASE_MS, Hole, LogAccounts, lease_of
from chatctl.cluster.entries import (
    FIELD,
    PREV_FIELD,
    STREAM,
    AccountEntry,
    Entry,
    MarkEntry,
    apply_account,
    encode_entries,
    read_entries,
)
from chatctl.errors import ChatctlError
from chatctl.store.registry import MemoryRegistry

NAMES = st.sampled_from(["ann", "Ann", "ANN", "bob"])
CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["register", "add", "passwd", "remove"]), NAMES, st.sampled_from("xyz")
    )
)


def entry(action: str, name: str, password: str, node: str = "n", p: int = 1) -> AccountEntry:
    return AccountEntry(
        node,
        p,
        0,
        action,
        name,
        "" if action == "remove" else password,
        "k" if action == "register" else "",
    )


@given(CHANGES)
def test_apply_account_is_the_models_rule(changes: list[tuple[str, str, str]]) -> None:
    registry = MemoryRegistry()
    model: dict[str, tuple[str, str]] = {}  # casefolded -> (name, hash)
    for action, name, password in changes:
        key = name.casefold()
        refused = apply_account(registry, entry(action, name, password))
        if action in ("register", "add"):
            assert (refused == "") == (key not in model)
            model.setdefault(key, (name, password))
        elif action == "passwd":
            assert (refused == "") == (key in model)
            if key in model:
                model[key] = (model[key][0], password)
        else:
            assert (refused == "") == (key in model)
            model.pop(key, None)
        assert sorted((a.name, a.password_hash) for a in registry.accounts()) == sorted(
            model.values()
        )


def xread(payloads: list[tuple[int, bytes]]) -> Any:
    return [[STREAM, [[b"%d-0" % ms, [FIELD, payload]] for ms, payload in payloads]]]


@given(CHANGES, st.lists(st.integers(1, 5)))
def test_log_accounts_read_the_same_from_any_split(
    changes: list[tuple[str, str, str]], cuts: list[int]
) -> None:
    payloads = [
        (1000 + i, encode_entries([entry(action, name, password, p=i)]))
        for i, (action, name, password) in enumerate(changes)
    ]
    whole = LogAccounts(DEFAULT_LEASE_MS)
    assert whole.feed(read_entries(xread(payloads))) is None
    split = LogAccounts(DEFAULT_LEASE_MS)
    at = 0
    for cut in [*cuts, len(payloads)]:
        split.feed(
            read_entries(xread(payloads[at : at + cut]) if payloads[at : at + cut] else None)
        )
        at += cut
    assert split.registry.accounts() == whole.registry.accounts()
    direct = MemoryRegistry()
    for action, name, password in changes:
        apply_account(direct, entry(action, name, password))
    assert whole.registry.accounts() == direct.accounts()


def test_the_outcome_of_ones_own_entry_and_what_a_gone_node_appended() -> None:
    lease = 2000
    log: list[tuple[int, list[Entry]]] = [
        (1000, [MarkEntry("a", 1)]),
        (1000, [MarkEntry("b", 1)]),
        (1500, [entry("add", "ann", "x", node="a", p=2)]),
        # b's lease ends (a beats): an entry b appended after that is skipped by every node.
        (2500, [MarkEntry("a", 3)]),
        (3200, [MarkEntry("a", 4)]),
        (3300, [entry("add", "bob", "y", node="b", p=2)]),
        (3400, [entry("add", "ANN", "z", node="cli", p=1)]),  # the CLI's: refused
        (3500, [entry("passwd", "ann", "w", node="cli2", p=1)]),
    ]
    payloads = [(ms, encode_entries(entries)) for ms, entries in log]
    accounts = LogAccounts(lease)
    assert (
        accounts.feed(read_entries(xread(payloads)), mine=b"3400-0")
        == "account 'ann' exists already"
    )
    assert accounts.last_id == b"3400-0"  # it stops there
    assert accounts.feed(read_entries(xread(payloads[-1:])), mine=b"3500-0") == ""
    assert [(a.name, a.password_hash) for a in accounts.registry.accounts()] == [("ann", "w")]


def test_a_bad_stream_entry_is_skipped() -> None:
    accounts = LogAccounts(DEFAULT_LEASE_MS)
    reads = read_entries(xread([(1, b"\xc1"), (2, encode_entries([entry("add", "ann", "x")]))]))
    assert accounts.feed(reads, mine=b"2-0") == ""


def test_the_lease_comes_from_the_clusters_settings() -> None:
    assert lease_of(b"retain_messages=1000 node_lease_ms=2000") == 2000
    assert lease_of(None) == DEFAULT_LEASE_MS
    with pytest.raises(ChatctlError):
        lease_of(b"something else")


def test_entries_that_do_not_follow_the_last_one_read_are_a_hole() -> None:
    """Each stream entry names the one before it: reading on after a trim that took entries
    not read yet is noticed (the command then starts again from the current snapshot)."""
    log = LogAccounts(DEFAULT_LEASE_MS)
    first: Any = [
        b"1000-0",
        [FIELD, encode_entries([entry("add", "ann", "h")]), PREV_FIELD, b"0-0"],
    ]
    log.feed(read_entries([[STREAM, [first]]]))
    assert log.last_id == b"1000-0"
    later: Any = [
        b"3000-0",
        [FIELD, encode_entries([entry("add", "bob", "h")]), PREV_FIELD, b"2000-0"],
    ]
    with pytest.raises(Hole):
        log.feed(read_entries([[STREAM, [later]]]))
    assert [a.name for a in log.registry.accounts()] == ["ann"]  # nothing of it applied
