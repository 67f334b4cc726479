"""The bench's plan (targets, clients, shares among workers) and the set-up parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl import protocol as p
from chatctl.bench.adapters import ADAPTERS, Kind, SetupFailed
from chatctl.bench.params import Params, Scenario
from chatctl.bench.plan import (
    TLS_SCHEMES,
    BadBenchOption,
    Target,
    make_plan,
    parse_target,
    parse_targets,
)
from chatctl.errors import ExitCode
from tests.servers import run_chatctl

hosts = st.sampled_from(["127.0.0.1", "::1", "localhost", "chat.example"])
ports = st.integers(1, 65535)


@given(st.sampled_from(list(Kind)), hosts, ports, st.booleans())
def test_property_target_url_round_trips(kind: Kind, host: str, port: int, tls: bool) -> None:
    tls = tls and kind in TLS_SCHEMES.values()  # tls:// (chatctl) and nats+tls:// only
    target = Target(kind=kind, host=host, port=port, tls=tls)
    assert parse_target(target.url) == target


def test_tls_targets_keep_their_ca_and_plain_ones_ignore_it() -> None:
    t = parse_target("tls://127.0.0.1:7000", "ca.pem")
    assert (t.kind, t.tls, t.tls_ca, t.url) == (
        Kind.chatctl,
        True,
        "ca.pem",
        "tls://127.0.0.1:7000",
    )
    t = parse_target("NATS+TLS://[::1]:4222", "ca.pem")
    assert (t.kind, t.tls, t.tls_ca, t.url) == (Kind.nats, True, "ca.pem", "nats+tls://[::1]:4222")
    # like join and send, which ignore --tls-ca (maybe from the environment) without tls://
    t = parse_target("chat://127.0.0.1:7000", "ca.pem")
    assert (t.tls, t.tls_ca) == (False, None)
    with pytest.raises(BadBenchOption, match="unknown scheme"):
        parse_target("redis+tls://127.0.0.1:6379")


@given(st.text(max_size=30))
def test_property_bad_targets_are_usage_errors(text: str) -> None:
    try:
        target = parse_target(text)
    except BadBenchOption:
        return
    assert 0 < target.port < 65536 and target.host


@given(
    st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(
        lambda s: s not in {k.value for k in Kind} | {"chat", "tls"}
    )
)
def test_property_unknown_schemes_are_usage_errors_not_host_names(scheme: str) -> None:
    with pytest.raises(BadBenchOption, match="unknown scheme"):
        parse_target(f"{scheme}://127.0.0.1:6379")


def test_an_unwritable_csv_path_fails_before_the_run() -> None:
    result = run_chatctl("bench", "--csv", "/nonexistent/dir/x.csv")
    assert result.returncode == ExitCode.USAGE
    assert "no such directory" in result.stderr
    assert "Traceback" not in result.stderr


params = st.builds(
    Params,
    scenario=st.sampled_from(list(Scenario)),
    publishers=st.integers(1, 5),
    subscribers=st.integers(1, 20),
    clients=st.integers(2, 30),
    rooms=st.integers(1, 6),
    rate=st.sampled_from([0.0, 100.0]),
    workers=st.integers(1, 4),
)


@given(params, st.sampled_from(list(Kind)))
def test_property_every_connection_has_exactly_one_worker(par: Params, kind: Kind) -> None:
    plan = make_plan(par, Target(kind=kind, host="127.0.0.1", port=1))
    shares = plan.shares()
    dealt = [c for share in shares for c in share]
    assert sorted(map(repr, dealt)) == sorted(map(repr, plan.conns()))
    assert len(shares) <= par.workers
    if par.rate and len(shares) >= 2 and any(c.sub < 0 for c in dealt):
        assert all(c.sub < 0 for c in shares[0])  # publishers alone, to pace precisely


@given(params, st.sampled_from(list(Kind)))
def test_property_subscribers_expect_exactly_their_rooms_publishers(
    par: Params, kind: Kind
) -> None:
    plan = make_plan(par, Target(kind=kind, host="127.0.0.1", port=1))
    echo = ADAPTERS[kind].echo
    for client in plan.clients:
        if client.sub < 0:
            continue
        expected = set(plan.expected_pubs(client))
        for pub in range(plan.n_pubs):
            same_room = plan.pub_room[pub] == client.room
            own = plan.pub_client[pub] == client.index
            assert (pub in expected) == (same_room and (echo or not own))


REPLIES = {
    Kind.chatctl: p.encode(p.Welcome(protocol=1, server="s", version="1", nick="n", token="t"))
    + p.encode(p.HistoryEnd(room="r", head=0))
    + p.encode(p.Members(room="r", nicks=["n"])),
    Kind.redis: b"*3\r\n$9\r\nsubscribe\r\n$1\r\nr\r\n:1\r\n",
    Kind.nats: b'INFO {"server_id":"x"}\r\nPONG\r\n',
    Kind.irc: b":s 001 n :Welcome\r\n:s 376 n :End of MOTD\r\n:n!~n@h JOIN :#r\r\n"
    b":s 353 n = #r :@n\r\n:s 366 n #r :End of NAMES list\r\n",
}


@given(st.sampled_from(list(Kind)), st.lists(st.integers(1, 20), max_size=10))
def test_property_set_up_finishes_whatever_the_chunking(kind: Kind, cuts: list[int]) -> None:
    setup = ADAPTERS[kind].setup(name="n", room="r", sub=True, pub=False)
    assert setup.first
    data, done = REPLIES[kind], False
    for cut in [*cuts, len(data)]:
        chunk, data = data[:cut], data[cut:]
        if chunk:
            assert not done
            _, done = setup.feed(chunk)
    assert done


@given(st.sampled_from(list(Kind)), st.binary(max_size=200))
def test_property_garbage_in_set_up_is_a_clear_failure_or_a_wait(
    kind: Kind, garbage: bytes
) -> None:
    setup = ADAPTERS[kind].setup(name="n", room="r", sub=True, pub=True)
    try:
        setup.feed(garbage)
    except SetupFailed as exc:
        assert str(exc)


@given(params, st.sampled_from(list(Kind)))
def test_property_deliveries_per_message_is_the_mean_fan_out(par: Params, kind: Kind) -> None:
    plan = make_plan(par, Target(kind=kind, host="127.0.0.1", port=1))
    pairs = sum(len(plan.expected_pubs(c)) for c in plan.clients if c.sub >= 0)
    assert plan.deliveries_per_message() == max(1, pairs // max(plan.n_pubs, 1))


@given(st.sampled_from([Kind.redis, Kind.nats]))
def test_property_an_endless_set_up_reply_fails_clearly(kind: Kind) -> None:
    setup = ADAPTERS[kind].setup(name="n", room="r", sub=True, pub=False)
    try:
        for _ in range(100):
            setup.feed(b"+" * 4096)
    except SetupFailed as exc:
        assert "no valid set-up reply" in str(exc)
    else:
        raise AssertionError("an endless reply was accepted")


def test_what_a_server_says_when_it_closes_a_connection() -> None:
    bye = p.encode(p.Bye(code=p.ErrorCode.SLOW_CONSUMER, reason="too slow"))
    chatctl = ADAPTERS[Kind.chatctl]
    assert chatctl.farewell is not None and bye.startswith(chatctl.farewell)
    assert chatctl.farewell_text(bye + b"more") == "too slow (code 302)"
    assert chatctl.farewell_text(bye[:-1]) == ""  # cut short: nothing yet
    nats = ADAPTERS[Kind.nats]
    assert nats.farewell_text(b"-ERR 'Slow Consumer'\r\nPING") == "-ERR 'Slow Consumer'"


def test_rooms_are_named_for_an_operator_or_as_given() -> None:
    target = Target(kind=Kind.chatctl, host="127.0.0.1", port=1)
    fan = make_plan(Params(), target)
    assert fan.rooms == [f"bench-{fan.run_id}-fan"]
    rooms = make_plan(Params(scenario=Scenario.rooms, rooms=3, clients=6), target)
    assert rooms.rooms == [f"bench-{rooms.run_id}-r{i}" for i in range(3)]
    given = Params(scenario=Scenario.rooms, rooms=3, clients=6, room="#Load")
    assert make_plan(given, target).rooms == ["load-0", "load-1", "load-2"]
    assert make_plan(Params(room="Load"), target).rooms == ["load"]
    assert make_plan(Params(scenario=Scenario.connect, room="load"), target).rooms == []
    for bad in ("bad!room", "x" * 63):
        with pytest.raises(BadBenchOption, match="--room"):
            make_plan(Params(scenario=Scenario.rooms, rooms=10, clients=10, room=bad), target)


# Several targets: the nodes of one chatctl cluster ---------------------------------------------

node_urls = st.lists(
    st.builds(lambda host, port: Target(kind=Kind.chatctl, host=host, port=port), hosts, ports),
    min_size=1,
    max_size=6,
    unique_by=lambda t: (t.host, t.port),
)


@given(node_urls, st.booleans(), st.sampled_from([",", ", ", " ,"]))
def test_property_target_lists_round_trip(targets: list[Target], scheme: bool, sep: str) -> None:
    text = sep.join(("chat://" if scheme else "") + t.url for t in targets)
    assert parse_targets(text) == tuple(targets)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("127.0.0.1:1,", "an empty address"),
        ("127.0.0.1:1,127.0.0.1:1", "listed twice"),
        ("chat://127.0.0.1:1,tls://127.0.0.1:2", "mixes TLS"),
        ("127.0.0.1:1,redis://127.0.0.1:2", "chatctl nodes"),
        ("nats://127.0.0.1:1,nats://127.0.0.1:2", "chatctl nodes"),
        ("127.0.0.1:1,127.0.0.1", "expected HOST:PORT"),
    ],
)
def test_bad_target_lists_are_clear_errors(text: str, problem: str) -> None:
    with pytest.raises(BadBenchOption, match=problem):
        parse_targets(text)


@given(
    st.sampled_from([Scenario.fanout, Scenario.room, Scenario.rooms, Scenario.connect]),
    st.integers(1, 5),
    st.integers(1, 40),
    st.integers(2, 40),
    st.integers(1, 5),
)
def test_property_clients_are_dealt_to_the_nodes_round_robin(
    scenario: Scenario, pubs: int, subs: int, clients: int, n_nodes: int
) -> None:
    nodes = tuple(
        Target(kind=Kind.chatctl, host="127.0.0.1", port=1000 + i) for i in range(n_nodes)
    )
    params = Params(
        scenario=scenario, publishers=pubs, subscribers=subs, clients=clients, workers=3
    )
    plan = make_plan(params, nodes[0], nodes[1:])
    assert plan.targets == nodes
    for role in ("pub", "sub"):
        # Publishers (clients that publish) and pure subscribers are each dealt in turn.
        group = [
            c for c in plan.clients if (c.pub >= 0 if role == "pub" else c.pub < 0 and c.sub >= 0)
        ]
        assert [c.node for c in group] == [i % n_nodes for i in range(len(group))]
    dealt = [spec for share in plan.shares() for spec in share]
    assert {(s.client, s.node) for s in dealt} == {(c.index, c.node) for c in plan.clients}
