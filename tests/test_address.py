"""The one parser of server addresses (chatctl/address.py), held to properties."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.address import (
    Address,
    BadAddress,
    format_addresses,
    parse_address,
    parse_addresses,
)

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
names = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
hosts = st.one_of(names, ipv4, ipv6)
ports = st.integers(1, 65535)


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@given(hosts, ports, st.booleans())
def test_a_url_round_trips(host: str, port: int, tls: bool) -> None:
    address = Address(host, port, tls)
    assert parse_address(str(address), 1) == address
    assert str(address).startswith("tls://" if tls else "chat://")


@given(hosts, ports, ports)
def test_host_port_is_plaintext_and_names_its_port(host: str, port: int, default: int) -> None:
    assert parse_address(f"{bracketed(host)}:{port}", default) == Address(host, port, False)


@given(hosts, ports)
def test_a_bare_host_takes_the_default_port(host: str, default: int) -> None:
    assert parse_address(host, default) == Address(host, default, False)
    assert parse_address(bracketed(host), default) == Address(host, default, False)
    assert parse_address(f"tls://{bracketed(host)}", default) == Address(host, default, True)


@given(hosts, ports, st.sampled_from(["TLS", "Tls", "CHAT", "Chat"]))
def test_schemes_are_case_insensitive(host: str, port: int, scheme: str) -> None:
    address = parse_address(f"{scheme}://{bracketed(host)}:{port}", 1)
    assert address == Address(host, port, scheme.lower() == "tls")


@given(hosts, st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_ports_out_of_range_are_refused(host: str, port: int) -> None:
    with pytest.raises(BadAddress, match="port must be a number from 1 to 65535"):
        parse_address(f"{bracketed(host)}:{port}", 1)


@given(st.text(max_size=40), ports)
def test_anything_parses_or_is_a_bad_address(text: str, default: int) -> None:
    try:
        address = parse_address(text, default)
    except BadAddress as exc:
        assert "\n" not in str(exc)
        return
    assert address.host and 0 < address.port < 65536
    assert parse_address(str(address), default) == address


@given(ipv6, ports)
def test_hostport_brackets_ipv6(host: str, port: int) -> None:
    assert Address(host, port).hostport == f"[{host}]:{port}"
    assert ipaddress.ip_address(parse_address(f"[{host}]:{port}", 1).host)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://h:1", "unknown scheme 'http'"),
        ("tls://", "the host is missing"),
        (":80", "the host is missing"),
        ("h:", "the port is missing"),
        ("[::1", "closing ']'"),
        ("[::1]x", "expected [IPV6]:PORT"),
        ("h:port", "port must be a number"),
        ("a b:1", "is not a host name"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BadAddress, match=re.escape(message)):
        parse_address(text, 7777)


# -- several addresses, comma-separated (failover) -------------------------------------------------

addresses = st.builds(Address, hosts, ports, st.booleans())
address_lists = st.lists(addresses, min_size=1, max_size=5)
spaces = st.text(alphabet=" \t", max_size=3)


@given(address_lists)
def test_a_list_round_trips(listed: list[Address]) -> None:
    assert parse_addresses(format_addresses(listed), 1) == listed


@given(address_lists, st.data())
def test_whitespace_around_commas_is_ignored(listed: list[Address], data: st.DataObject) -> None:
    text = ",".join(data.draw(spaces) + str(a) + data.draw(spaces) for a in listed)
    assert parse_addresses(text, 1) == listed


@st.composite
def written(draw: st.DrawFn, default: int) -> tuple[str, Address]:
    """An address in any of the forms a command takes, and what it means with `default`."""
    host, port, tls = draw(hosts), draw(ports), draw(st.booleans())
    form = draw(st.sampled_from(["url", "url-default", "hostport", "bare"]))
    if form == "url":
        return f"{'tls' if tls else 'chat'}://{bracketed(host)}:{port}", Address(host, port, tls)
    if form == "url-default":
        return f"{'tls' if tls else 'chat'}://{bracketed(host)}", Address(host, default, tls)
    if form == "hostport":
        return f"{bracketed(host)}:{port}", Address(host, port)
    return bracketed(host), Address(host, default)


@given(ports, st.data())
def test_every_form_may_be_mixed_and_the_port_fills_in(default: int, data: st.DataObject) -> None:
    items = data.draw(st.lists(written(default), min_size=1, max_size=5))
    text = ",".join(item for item, _ in items)
    assert parse_addresses(text, default) == [address for _, address in items]


bad_items = st.sampled_from(["http://h:1", "h:port", "[::1", "h:", ":80", "a b:1", "h:70000"])


@given(address_lists, bad_items, st.data())
def test_an_error_names_the_bad_item(listed: list[Address], bad: str, data: st.DataObject) -> None:
    items = [str(a) for a in listed]
    at = data.draw(st.integers(0, len(items)))
    items.insert(at, bad)
    text = ", ".join(items)
    with pytest.raises(BadAddress) as caught:
        parse_addresses(text, 1)
    message = str(caught.value)
    assert f"address {at + 1} of {len(items)}" in message
    assert repr(bad) in message and "\n" not in message
    # The same words as for that address alone.
    with pytest.raises(BadAddress) as alone:
        parse_address(bad, 1)
    assert str(alone.value) in message


@given(address_lists, st.data())
def test_an_empty_item_is_an_error(listed: list[Address], data: st.DataObject) -> None:
    items = [str(a) for a in listed]
    at = data.draw(st.integers(0, len(items)))
    items.insert(at, data.draw(spaces))
    with pytest.raises(BadAddress, match=f"address {at + 1} of {len(items)} .*is empty"):
        parse_addresses(",".join(items), 1)


@pytest.mark.parametrize("text", ["", " ", ","])
def test_nothing_is_no_address(text: str) -> None:
    with pytest.raises(BadAddress, match="empty"):
        parse_addresses(text, 1)


def test_one_address_reads_as_before() -> None:
    assert parse_addresses("tls://[::1]:5", 7) == [Address("::1", 5, True)]
    with pytest.raises(BadAddress) as caught:
        parse_addresses("h:port", 7)
    assert str(caught.value) == "'h:port': the port must be a number from 1 to 65535"


def test_bench_takes_chat_and_tls_urls() -> None:
    from chatctl.bench.plan import parse_target

    assert parse_target("chat://127.0.0.1:5").port == 5
    assert parse_target("tls://127.0.0.1:5").tls
