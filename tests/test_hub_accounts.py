"""Accounts, sessions and private rooms in the sans-IO hub (docs/protocol.md §6.6): logins,
the login throttle, tokens bound to accounts, reserved nicks, registration and moderation;
each attack of issue #12 must fail."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.passwords import hash_password
from chatctl.protocol import (
    Bye,
    ChangeNick,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    Join,
    ListRooms,
    Members,
    Moderate,
    Notice,
    Register,
    RoomList,
    Say,
    Welcome,
    Who,
)
from chatctl.server import hub as hub_module
from chatctl.server.admission import LoginThrottle
from chatctl.server.config import AuthMode, Registration, ServerConfig
from chatctl.server.hub import Busy, Check, Hub, Origin
from chatctl.store.memory import MemoryStore
from chatctl.store.registry import MemoryRegistry
from tests.test_hub import NOW, flatten

CHEAP = {"n": 1 << 10}  # a fast scrypt for tests: verify reads the cost from the hash


def make(**overrides: Any) -> tuple[Hub, MemoryRegistry]:
    registry = MemoryRegistry()
    for name in ("alice", "bob"):
        registry.add_account(name, hash_password(f"{name}-password", **CHEAP), NOW)
    hub = Hub(ServerConfig(**overrides), MemoryStore(), registry)
    return hub, registry


def answer(hub: Hub, cid: int, event: Event, origin: Origin | None = None) -> list[Event]:
    return [e for to, e in flatten(hub.handle(cid, event, NOW, origin=origin)) if to == cid]


def login(hub: Hub, cid: int, account: str, *, nick: str = "", token: str = "") -> Welcome:
    [welcome] = answer(
        hub,
        cid,
        Hello(
            version=1,
            nick=nick,
            token=token,
            account=account,
            password=f"{account.lower()}-password",
        ),
        Origin(f"127.0.0.1:{cid}", True, "127.0.0.1"),
    )
    assert type(welcome) is Welcome, welcome
    return welcome


def guest(hub: Hub, cid: int, nick: str, token: str = "") -> Welcome:
    [welcome] = answer(hub, cid, Hello(version=1, nick=nick, token=token))
    assert type(welcome) is Welcome, welcome
    return welcome


def bye_code(events: list[Event]) -> int:
    [bye] = events
    assert type(bye) is Bye, bye
    return bye.code


# -- logins ------------------------------------------------------------------------------------


def test_a_login_gets_its_account_and_its_nick() -> None:
    hub, _ = make()
    welcome = login(hub, 1, "ALICE")
    assert welcome.account == "alice" and welcome.nick == "alice"
    assert login(hub, 2, "bob", nick="bobby").nick == "bobby"


def test_wrong_password_and_unknown_account_read_the_same() -> None:
    hub, _ = make()
    origin = Origin("127.0.0.1:1", True, "127.0.0.1")
    wrong = answer(hub, 1, Hello(version=1, nick="", account="alice", password="nope"), origin)
    unknown = answer(hub, 2, Hello(version=1, nick="", account="zed", password="nope"), origin)
    assert wrong == unknown
    assert bye_code(wrong) == ErrorCode.LOGIN_FAILED
    assert hub.sessions == {}


def test_a_password_on_an_insecure_link_is_refused_before_it_is_checked() -> None:
    hub, _ = make()
    checked: list[Check] = []
    hub.offload = lambda check: checked.append(check) or True  # type: ignore[func-returns-value]
    events = answer(
        hub,
        1,
        Hello(version=1, nick="", account="alice", password="alice-password"),
        Origin("192.0.2.1:5", False, "192.0.2.1"),
    )
    [bye] = events
    assert type(bye) is Bye and bye.code == ErrorCode.LOGIN_FAILED and "TLS" in bye.reason
    assert checked == []


def test_failed_logins_are_throttled_per_address_and_per_account() -> None:
    hub, _ = make()
    checked: list[Check] = []

    def offload(check: Check) -> bool:
        checked.append(check)
        return False

    hub.offload = offload
    origin = Origin("192.0.2.1:5", True, "192.0.2.1")
    for cid in range(1, 1 + LoginThrottle.FREE + 1):
        hello = Hello(version=1, nick="", account="alice", password="guess")
        assert bye_code(answer(hub, cid, hello, origin)) == ErrorCode.LOGIN_FAILED
    assert len(checked) == LoginThrottle.FREE + 1
    # Throttled now: refused without a check, from this address and for this account.
    [bye] = answer(hub, 10, Hello(version=1, nick="", account="bob", password="x"), origin)
    assert type(bye) is Bye and "try again in" in bye.reason
    elsewhere = Origin("198.51.100.1:5", True, "198.51.100.1")
    [bye] = answer(hub, 11, Hello(version=1, nick="", account="alice", password="x"), elsewhere)
    assert type(bye) is Bye and "try again in" in bye.reason
    assert len(checked) == LoginThrottle.FREE + 1


def test_a_busy_verifier_refuses_the_login_in_words() -> None:
    hub, _ = make()

    def busy(check: Check) -> bool:
        raise Busy("the server is busy checking passwords")

    hub.offload = busy
    events = answer(
        hub, 1, Hello(version=1, nick="", account="alice", password="x"), Origin(secure=True)
    )
    [bye] = events
    assert type(bye) is Bye and bye.reason == "the server is busy checking passwords"


def test_an_offloaded_check_welcomes_later_and_only_a_live_connection() -> None:
    hub, _ = make()
    hub.offload = lambda check: None
    hello = Hello(version=1, nick="", account="alice", password="alice-password")
    assert answer(hub, 1, hello, Origin()) == []
    assert 1 in hub.pending
    [(to, welcome)] = flatten(hub.checked(1, True, NOW))
    assert to == 1 and type(welcome) is Welcome and welcome.account == "alice"
    assert answer(hub, 2, hello, Origin()) == []
    hub.disconnect(2, "gone", NOW)
    assert hub.checked(2, True, NOW) == []


def test_auth_required_and_auth_off() -> None:
    hub, _ = make(auth=AuthMode.required)
    assert bye_code(answer(hub, 1, Hello(version=1, nick="x"))) == ErrorCode.AUTH_REQUIRED
    assert login(hub, 2, "alice").account == "alice"
    hub, _ = make(auth=AuthMode.off)
    assert guest(hub, 1, "alice").nick == "alice"  # nobody's nick is reserved
    hello = Hello(version=1, nick="", account="alice", password="alice-password")
    assert bye_code(answer(hub, 2, hello, Origin())) == ErrorCode.LOGIN_FAILED


# -- tokens and takeovers ----------------------------------------------------------------------


def test_replaying_an_accounts_token_without_its_login_takes_nothing_over() -> None:
    hub, _ = make()
    token = login(hub, 1, "alice").token
    thief = guest(hub, 2, "mallory", token=token)
    assert thief.token != token and thief.nick == "mallory" and thief.account == ""
    assert hub.sessions[1].nick == "alice"  # the victim keeps its session


def test_the_accounts_login_resumes_its_session_and_the_old_connection_hears_who() -> None:
    hub, _ = make()
    token = login(hub, 1, "alice").token
    hub.handle(1, Join(room="r"), NOW)
    out = flatten(
        hub.handle(
            2,
            Hello(version=1, nick="", token=token, account="alice", password="alice-password"),
            NOW,
            origin=Origin("203.0.113.9:4242", True, "203.0.113.9"),
        )
    )
    old = [e for to, e in out if to == 1]
    assert old == [
        Bye(
            code=ErrorCode.REPLACED,
            reason="your session was taken over by a new connection from 203.0.113.9:4242 "
            "(logged in as alice)",
        )
    ]
    assert hub.rooms["r"].targets == (2,)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789_-", max_size=64))
def test_no_made_up_token_is_accepted(token: str) -> None:
    hub, _ = make()
    assert guest(hub, 1, "x", token=token).token != token


# -- nicks -------------------------------------------------------------------------------------


def test_an_accounts_nick_is_reserved_for_it() -> None:
    hub, _ = make()
    assert guest(hub, 1, "Alice").nick == "Alice2"
    [error] = answer(hub, 1, ChangeNick(nick="alice"))
    assert type(error) is Error and error.code == ErrorCode.NICK_RESERVED
    # A guest whose nick became an account's is renamed when the owner logs in.
    hub2, registry = make()
    guest(hub2, 5, "carol")
    registry.add_account("carol", hash_password("carol-password", **CHEAP), NOW)
    out = flatten(
        hub2.handle(
            6,
            Hello(version=1, nick="", account="carol", password="carol-password"),
            NOW,
            origin=Origin(),
        )
    )
    assert (5, Notice(kind="renamed", nick="carol", ts=NOW, new_nick="carol2")) in out
    assert next(e for to, e in out if to == 6).nick == "carol"  # type: ignore[attr-defined]


# -- registration ------------------------------------------------------------------------------


def test_registration_makes_the_nick_an_account() -> None:
    hub, registry = make(registration=Registration.open)
    guest(hub, 1, "dave")
    [error] = answer(hub, 1, Register(password="short"))
    assert type(error) is Error and error.code == ErrorCode.REGISTRATION_REFUSED
    [notice] = answer(hub, 1, Register(password="dave-password"))
    assert notice == Notice(kind="registered", nick="dave", ts=NOW)
    assert registry.account("dave") is not None
    assert login(hub, 2, "dave", nick="dave2").account == "dave"
    [error] = answer(hub, 1, Register(password="dave-password"))
    assert type(error) is Error and "already logged in" in error.message


def test_registration_closed_by_default_and_only_on_a_secure_link() -> None:
    hub, _ = make()
    guest(hub, 1, "dave")
    [error] = answer(hub, 1, Register(password="dave-password"))
    assert type(error) is Error and "closed" in error.message
    hub, _ = make(registration=Registration.open)
    answer(hub, 1, Hello(version=1, nick="erin"), Origin("192.0.2.1:1", False, "192.0.2.1"))
    [error] = answer(hub, 1, Register(password="erin-password"))
    assert type(error) is Error and "TLS" in error.message


# -- private rooms and moderation ------------------------------------------------------------


def private_room() -> Hub:
    hub, _ = make()
    login(hub, 1, "alice")
    hub.handle(1, Join(room="hr-private"), NOW)
    hub.handle(1, Say(msg_id="1", room="hr-private", text="salaries"), NOW)
    answer(hub, 1, Moderate(room="hr-private", action="private"))
    guest(hub, 2, "mallory")
    return hub


def test_a_private_room_is_hidden_and_refused_to_non_members() -> None:
    hub = private_room()
    for request in (
        Join(room="hr-private"),
        Who(room="hr-private"),
        History(room="hr-private", after=0),
        Say(msg_id="x", room="hr-private", text="hi"),
    ):
        [error] = answer(hub, 2, request)
        assert type(error) is Error and error.code == ErrorCode.NOT_PERMITTED, request
    [rooms] = answer(hub, 2, ListRooms())
    assert rooms == RoomList(rooms={})
    [rooms] = answer(hub, 1, ListRooms())
    assert rooms == RoomList(rooms={"hr-private": 1})


def test_an_invitation_lets_in_and_everyone_hears_of_it() -> None:
    hub = private_room()
    login(hub, 3, "bob")
    out = flatten(hub.handle(1, Moderate(room="hr-private", action="invite", target="bob"), NOW))
    notice = Notice(kind="invited", nick="alice", ts=NOW, room="hr-private", target="bob")
    assert sorted(to for to, _ in out) == [1, 3] and {e for _, e in out} == {notice}
    events = answer(hub, 3, Join(room="hr-private"))
    members = [e for e in events if type(e) is Members]
    assert members[-1].private and members[-1].owner == "alice"


def test_only_owners_and_ops_moderate_and_only_owners_name_ops() -> None:
    hub = private_room()
    login(hub, 3, "bob")
    [error] = answer(hub, 3, Moderate(room="hr-private", action="public"))
    assert type(error) is Error and error.code == ErrorCode.NOT_PERMITTED
    answer(hub, 1, Moderate(room="hr-private", action="op", target="bob"))
    answer(hub, 3, Moderate(room="hr-private", action="topic", text="pay"))
    assert hub.rules.settings["hr-private"].topic == "pay"
    [error] = answer(hub, 3, Moderate(room="hr-private", action="deop", target="bob"))
    assert type(error) is Error and "owner" in error.message
    [error] = answer(hub, 1, Moderate(room="hr-private", action="op", target="mallory"))
    assert type(error) is Error and "accounts" in error.message


def test_kick_and_ban_put_a_member_out_and_keep_a_banned_one_out() -> None:
    hub, _ = make()
    login(hub, 1, "alice")
    hub.handle(1, Join(room="pub"), NOW)
    guest(hub, 2, "troll")
    hub.handle(2, Join(room="pub"), NOW)
    out = flatten(
        hub.handle(1, Moderate(room="pub", action="kick", target="TROLL", text="spam"), NOW)
    )
    kicked = Notice(kind="kicked", nick="alice", ts=NOW, room="pub", target="troll", reason="spam")
    assert sorted(to for to, _ in out) == [1, 2] and {e for _, e in out} == {kicked}
    assert hub.rooms["pub"].targets == (1,)
    assert type(answer(hub, 2, Join(room="pub"))[0]) is Notice  # a kick is not a ban
    answer(hub, 1, Moderate(room="pub", action="ban", target="troll"))
    assert hub.rooms["pub"].targets == (1,)
    [error] = answer(hub, 2, Join(room="pub"))
    assert type(error) is Error and "banned" in error.message
    [error] = answer(hub, 2, Say(msg_id="s", room="pub", text="still here?"))
    assert type(error) is Error and error.code == ErrorCode.NOT_PERMITTED and error.msg_id == "s"
    [error] = answer(hub, 1, Moderate(room="pub", action="ban", target="alice"))
    assert type(error) is Error and "owner" in error.message


def test_guests_own_nothing_and_unowned_rooms_cannot_be_moderated() -> None:
    hub, _ = make()
    guest(hub, 1, "gus")
    hub.handle(1, Join(room="free"), NOW)
    [error] = answer(hub, 1, Moderate(room="free", action="private"))
    assert type(error) is Error and "nobody owns" in error.message
    [error] = answer(hub, 1, Moderate(room="free", action="shout"))
    assert type(error) is Error and error.code == ErrorCode.INVALID_REQUEST


def test_room_settings_survive_a_new_hub_on_the_same_registry() -> None:
    hub = private_room()
    again = Hub(ServerConfig(), MemoryStore(), hub.registry)
    guest(again, 1, "mallory")
    [error] = answer(again, 1, Join(room="hr-private"))
    assert type(error) is Error and error.code == ErrorCode.NOT_PERMITTED


# -- the login throttle, against a model --------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["fail", "ok"]), st.floats(0, 50), st.sampled_from("ab")),
        max_size=40,
    )
)
def test_login_throttle_delays_grow_after_the_free_failures(
    steps: list[tuple[str, float, str]],
) -> None:
    throttle = LoginThrottle()
    now = 0.0
    model: dict[str, list[float]] = {}  # key -> failure times since the last success
    for what, later, key in steps:
        now += later
        keys = (key,)
        if what == "ok":
            throttle.succeeded(keys)
            model.pop(key, None)
            continue
        assert throttle.wait(keys, now) >= 0
        throttle.failed(keys, now)
        model.setdefault(key, []).append(now)
        beyond = len(model[key]) - LoginThrottle.FREE
        expected = (
            min(LoginThrottle.CAP, LoginThrottle.BASE * 2 ** (beyond - 1)) if beyond > 0 else 0
        )
        assert abs(throttle.wait(keys, now) - expected) < 1e-6
    assert len(throttle) <= len(model)


def test_guesses_queued_together_count_before_their_checks_end() -> None:
    hub, _ = make()
    hub.offload = lambda check: None  # every check queued: none has answered yet
    origin = Origin("192.0.2.1:5", True, "192.0.2.1")
    answered = []
    for cid in range(1, 10):
        hello = Hello(version=1, nick="", account="alice", password=f"guess{cid}")
        answered.append(answer(hub, cid, hello, origin))
    queued = [a for a in answered if a == []]
    assert len(queued) == LoginThrottle.FREE + 1  # then the throttle refuses, unchecked
    assert all("try again in" in a[0].reason for a in answered if a)  # type: ignore[attr-defined]
    # The same guess from many connections counts once, and its success clears it all.
    hub, _ = make()
    hub.offload = lambda check: None
    good = Hello(version=1, nick="", account="alice", password="alice-password")
    for cid in range(1, 10):
        assert answer(hub, cid, good, origin) == []
    for cid in range(1, 10):
        [(_, welcome)] = flatten(hub.checked(cid, True, NOW))
        assert type(welcome) is Welcome
    assert len(hub.logins) == 0


def test_welcome_says_what_the_server_does_with_accounts() -> None:
    assert guest(make()[0], 1, "x").limits["accounts"] == 1
    hub, _ = make(auth=AuthMode.off, registration=Registration.open)
    welcome = guest(hub, 1, "x")
    assert welcome.limits["accounts"] == 0 and welcome.limits["registration"] == 1


def test_an_owner_under_another_nick_is_neither_kicked_nor_banned_out() -> None:
    hub, _ = make()
    login(hub, 1, "alice", nick="ally")
    hub.handle(1, Join(room="pub"), NOW)
    login(hub, 2, "bob")
    hub.handle(1, Moderate(room="pub", action="op", target="bob"), NOW)
    hub.handle(2, Join(room="pub"), NOW)
    [error] = answer(hub, 2, Moderate(room="pub", action="kick", target="ally"))
    assert type(error) is Error and "owner" in error.message
    answer(hub, 2, Moderate(room="pub", action="ban", target="ally"))
    assert 1 in hub.rooms["pub"].members


def test_logins_to_many_accounts_from_one_address_are_not_guesses_until_they_fail() -> None:
    hub, registry = make()
    for i in range(10):
        registry.add_account(f"user{i}", hash_password(f"user{i}-password", **CHEAP), NOW)
    hub.offload = lambda check: None
    origin = Origin("192.0.2.1:5", True, "192.0.2.1")  # a NAT: ten people behind it
    for i in range(10):
        hello = Hello(version=1, nick="", account=f"user{i}", password=f"user{i}-password")
        assert answer(hub, i + 1, hello, origin) == []
    for i in range(10):
        [(_, welcome)] = flatten(hub.checked(i + 1, True, NOW))
        assert type(welcome) is Welcome and welcome.account == f"user{i}"


def test_the_default_room_belongs_to_nobody() -> None:
    hub, _ = make()
    login(hub, 1, "alice")
    hub.handle(1, Say(msg_id="1", room="lobby", text="first!"), NOW)
    [error] = answer(hub, 1, Moderate(room="lobby", action="private"))
    assert type(error) is Error and "nobody owns" in error.message


def test_registration_stops_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "REGISTERED_MAX", 2)  # alice and bob are there already
    hub, _ = make(registration=Registration.open)
    guest(hub, 1, "dave")
    [error] = answer(hub, 1, Register(password="dave-password"))
    assert type(error) is Error and "no more registrations" in error.message


def test_oversized_logins_and_moderation_targets_are_refused_before_any_work() -> None:
    hub, _ = make()
    checked: list[Check] = []
    hub.offload = lambda check: checked.append(check) or True  # type: ignore[func-returns-value]
    for hello in (
        Hello(version=1, nick="", account="alice", password="x" * 60_000),
        Hello(version=1, nick="", account="a" * 60_000, password="alice-password"),
    ):
        [bye] = answer(hub, 1, hello, Origin())
        assert type(bye) is Bye and bye.code == ErrorCode.LOGIN_FAILED
    assert checked == []
    hub, _ = make()
    login(hub, 1, "alice")
    hub.handle(1, Join(room="hr"), NOW)
    [error] = answer(hub, 1, Moderate(room="hr", action="invite", target="b" * 60_000))
    assert type(error) is Error and error.code == ErrorCode.INVALID_REQUEST
    assert len(error.message) < 200
    assert hub.rules.settings["hr"].invited == frozenset()
