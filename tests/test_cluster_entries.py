"""The shared log's entries (chatctl/cluster/entries.py): what a node appends reads back the
same; whatever else a stream holds is reported, never raised, and a reply that is not
XREAD's is a ValueError, never anything else."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.cluster.entries import (
    ACCOUNT_ACTIONS,
    FIELD,
    STREAM,
    AccountEntry,
    ClaimEntry,
    EndEntry,
    Entry,
    HelloEntry,
    JoinEntry,
    MarkEntry,
    ModerateEntry,
    NickEntry,
    PartEntry,
    SayEntry,
    TellEntry,
    decode_entries,
    encode_entries,
    read_entries,
)
from chatctl.cluster.resp import RedisError, Reply
from chatctl.protocol import MODERATE_ACTIONS
from tests.test_cluster_resp import REPLIES

SAYS = st.builds(
    SayEntry,
    node=st.text(max_size=12),
    p=st.integers(0, 2**63 - 1),
    ts=st.integers(0, 2**53),
    room=st.sampled_from(["lobby", "dev", "a.b-c_d"]),
    nick=st.text(max_size=32),
    sender_key=st.text(max_size=32),
    msg_id=st.text(min_size=1, max_size=64),
    text=st.text(min_size=1, max_size=50),
    action=st.booleans(),
)
NODE = {"node": st.text(max_size=12), "p": st.integers(0, 2**63 - 1), "ts": st.integers(0, 2**53)}
NICKS = st.sampled_from(["ann", "Bob_2", "x" * 32, "[q]"])
ROOMS = st.sampled_from(["lobby", "dev", "a.b-c_d"])
ENTRIES = st.lists(
    st.one_of(
        SAYS,
        st.builds(MarkEntry, node=st.text(), p=st.integers(0, 2**63 - 1)),
        st.builds(
            HelloEntry,
            **NODE,
            key=st.text(max_size=32),
            fresh=st.text(min_size=1, max_size=32),
            nick=NICKS,
            account=st.text(max_size=32),
        ),
        st.builds(
            EndEntry,
            **NODE,
            key=st.text(),
            since=st.integers(0, 2**63 - 1),
            reason=st.text(),
            clean=st.booleans(),
        ),
        st.builds(JoinEntry, **NODE, key=st.text(), room=ROOMS),
        st.builds(PartEntry, **NODE, key=st.text(), room=ROOMS, reason=st.text()),
        st.builds(NickEntry, **NODE, key=st.text(), nick=NICKS),
        st.builds(
            TellEntry,
            **NODE,
            key=st.text(),
            nick=st.text(),
            to=st.text(),
            msg_id=st.text(min_size=1, max_size=64),
            text=st.text(min_size=1),
            action=st.booleans(),
        ),
        st.sampled_from(ACCOUNT_ACTIONS).flatmap(
            lambda action: st.builds(
                AccountEntry,
                **NODE,
                action=st.just(action),
                name=NICKS,
                password_hash=st.just("") if action == "remove" else st.text(min_size=1),
                key=st.text(min_size=1) if action == "register" else st.just(""),
            )
        ),
        st.builds(
            ClaimEntry, node=st.text(), p=st.integers(0, 2**63 - 1), room=ROOMS, account=NICKS
        ),
        st.builds(
            ModerateEntry,
            **NODE,
            key=st.text(),
            nick=NICKS,
            account=st.one_of(st.just(""), NICKS),
            room=ROOMS,
            action=st.sampled_from(MODERATE_ACTIONS),
            target=st.text(max_size=40),
            text=st.text(max_size=300),
        ),
    )
)


def xread(*payloads: bytes) -> Reply:
    return [[STREAM, [[b"%d-0" % i, [FIELD, payload]] for i, payload in enumerate(payloads)]]]


@given(st.lists(ENTRIES, max_size=4))
def test_what_nodes_append_reads_back_the_same(batches: list[list[Entry]]) -> None:
    reads = read_entries(xread(*map(encode_entries, batches)))
    assert [read.entries for read in reads] == batches
    assert [read.id for read in reads] == [b"%d-0" % i for i in range(len(batches))]
    assert not any(read.problem for read in reads)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\xc1", "not a list of entries"),
        (msgspec.msgpack.encode([["say", "n", 1]]), "not a list of entries"),
        (msgspec.msgpack.encode([["nope", "n", 1]]), "not a list of entries"),
        (
            encode_entries([SayEntry("n", 1, 0, "Lobby", "a", "k", "m", "hi", False)]),
            "not normalised",
        ),
        (encode_entries([SayEntry("n", 1, 0, "lobby", "a", "k", "", "hi", False)]), "msg_id"),
        (encode_entries([SayEntry("n", 1, 0, "lobby", "a", "k", "m", "", False)]), "empty text"),
        (encode_entries([JoinEntry("n", 1, 0, "k", "#Lobby")]), "not normalised"),
        (encode_entries([PartEntry("n", 1, 0, "k", "", "")]), "not normalised"),
        (encode_entries([HelloEntry("n", 1, 0, "", "f", "1abc", "")]), "nick that is not valid"),
        (encode_entries([HelloEntry("n", 1, 0, "", "", "abc", "")]), "without a session key"),
        (encode_entries([NickEntry("n", 1, 0, "k", "a b")]), "nick that is not valid"),
        (encode_entries([TellEntry("n", 1, 0, "k", "a", "b", "", "hi", False)]), "msg_id"),
        (encode_entries([AccountEntry("n", 1, 0, "grant", "ann", "h", "")]), "not one"),
        (encode_entries([AccountEntry("n", 1, 0, "add", "a b", "h", "")]), "name that is not"),
        (encode_entries([AccountEntry("n", 1, 0, "add", "ann", "", "")]), "hash"),
        (encode_entries([AccountEntry("n", 1, 0, "remove", "ann", "h", "")]), "hash"),
        (encode_entries([AccountEntry("n", 1, 0, "register", "ann", "h", "")]), "session"),
        (encode_entries([AccountEntry("n", 1, 0, "add", "ann", "h", "k")]), "session"),
        (encode_entries([ClaimEntry("n", 1, "Dev", "ann")]), "not normalised"),
        (encode_entries([ClaimEntry("n", 1, "dev", "")]), "no valid account"),
        (
            encode_entries([ModerateEntry("n", 1, 0, "k", "ann", "ann", "dev", "x", "", "")]),
            "not one",
        ),
        (
            encode_entries([ModerateEntry("n", 1, 0, "k", "", "ann", "dev", "kick", "", "")]),
            "no valid nick",
        ),
        (
            encode_entries([ModerateEntry("n", 1, 0, "k", "a", "", "#dev", "kick", "b", "")]),
            "not normalised",
        ),
        (
            encode_entries(
                [ModerateEntry("n", 1, 0, "k", "a", "", "dev", "topic", "", "x" * 2000)]
            ),
            "too long",
        ),
    ],
)
def test_a_bad_payload_is_reported_and_skipped_whole(payload: bytes, problem: str) -> None:
    [read] = read_entries(xread(payload))
    assert read.entries == [] and problem in read.problem
    assert decode_entries(payload) == read.problem


def test_an_entry_names_the_one_before_it() -> None:
    payload = encode_entries([MarkEntry("n", 1)])
    [new, old] = read_entries(
        [[STREAM, [[b"2-0", [FIELD, payload, b"p", b"1-0"]], [b"3-0", [FIELD, payload]]]]]
    )
    assert (new.prev, new.size, new.entries) == (b"1-0", len(payload), [MarkEntry("n", 1)])
    assert (old.prev, old.entries) == (b"", [MarkEntry("n", 1)])  # it does not say
    [bad] = read_entries([[STREAM, [[b"4-0", [FIELD, b"\xc1", b"p", b"3-0"]]]]])
    assert bad.prev == b"3-0" and bad.problem  # skipped, but the chain goes on


def test_other_fields_are_reported() -> None:
    [read] = read_entries([[STREAM, [[b"1-0", [b"x", b"y", b"z", b"w"]]]]])
    assert read.entries == [] and "unexpected fields" in read.problem


@given(REPLIES)
def test_any_reply_reads_as_entries_or_a_value_error(reply: Reply) -> None:
    try:
        reads = read_entries(reply)
    except ValueError:
        return
    assert reply is None or isinstance(reply, list)
    for read in reads:
        assert isinstance(read.id, bytes)


def test_the_shapes_of_xread_replies() -> None:
    assert read_entries(None) == []
    wrongs: list[Reply] = [
        b"OK",
        1,
        [],
        [[b"other", []]],
        [[STREAM, [[1, [FIELD, b""]]]]],
        RedisError("x"),
    ]
    for wrong in wrongs:
        with pytest.raises(ValueError):
            read_entries(wrong)
