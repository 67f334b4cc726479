"""Several server addresses: the client fails over between them in order (issue #15), in the
library, in `join` (a pipe) and in `send`, against real servers. Nothing here sleeps: every
wait is on a condition with a deadline."""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatctl.address import Address
from chatctl.client import Backoff, Client, Closed, Disconnected, Reconnected
from chatctl.client.connection import moves_on
from chatctl.client.link import InsecureLink
from chatctl.errors import ChatctlError, ConnectFailed, ExitCode, Rejected, TimedOut, Untrusted
from chatctl.protocol import ErrorCode, Message, Notice, Welcome
from chatctl.server.config import Registration
from chatctl.ui.login import PASSWORD_VAR
from chatctl.ui.render import TextRenderer, event_record
from tests import servers
from tests.clients import WAIT, JoinProcess, joined, wait_for
from tests.proxy import proxy_to
from tests.servers import free_port, run_chatctl, running_server, serve_process

PASSWORD = "correct horse battery"
FAST = Backoff(base=0.05, cap=0.2)


def at(port: int, *, tls: bool = False) -> Address:
    return Address("127.0.0.1", port, tls)


@contextlib.contextmanager
def silent_listener() -> Iterator[socket.socket]:
    """A port that accepts TCP connections into its backlog but never answers: whether
    anybody connected is seen with `contacted`."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        listener.setblocking(False)
        yield listener


def contacted(listener: socket.socket) -> bool:
    """Whether a connection waits in the listener's backlog (the kernel completes the
    handshake before the client's connect returns, so this is settled by then)."""
    ready, _, _ = select.select([listener], [], [], 0)
    return bool(ready)


def dead_port() -> int:
    """A port of 127.0.0.1 with nothing listening: connections to it are refused."""
    return free_port()


# -- the library ----------------------------------------------------------------------------------


def test_the_first_address_refused_the_second_is_used() -> None:
    with running_server() as live:
        addresses = [at(dead_port()), at(live[1])]
        with Client(addresses, nick="alice", rooms=["lobby"]) as client:
            welcome = client.connect()
            assert welcome.nick == "alice"
            assert client.address == at(live[1]) and client.addr == f"127.0.0.1:{live[1]}"
            assert (client.host, client.port) == live
            assert client.say("lobby", "hi").wait(WAIT).seq == 1


def test_a_working_first_address_is_used_and_the_rest_are_not_touched() -> None:
    with running_server() as live, silent_listener() as later:
        later_port = later.getsockname()[1]
        with Client([at(live[1]), at(later_port)], nick="alice") as client:
            client.connect()
            assert client.port == live[1]
        assert not contacted(later)


def test_when_all_fail_the_error_says_what_each_said() -> None:
    first, second = dead_port(), dead_port()
    client = Client([at(first), at(second)], nick="alice", connect_timeout=2.0)
    with pytest.raises(ConnectFailed) as caught:
        client.connect()
    client.close()
    message = str(caught.value)
    assert "none of 2 servers answered" in message
    assert f"127.0.0.1:{first}" in message and f"127.0.0.1:{second}" in message
    assert caught.value.exit_code == ExitCode.CONNECT and "\n" not in message


def test_one_address_fails_as_it_always_did() -> None:
    port = dead_port()
    with pytest.raises(ConnectFailed, match=f"^could not connect to 127.0.0.1:{port}: "):
        Client("127.0.0.1", port, nick="alice").connect()


def test_a_silent_server_times_out_and_the_next_is_tried() -> None:
    with silent_listener() as silent, running_server() as live:
        addresses = [at(silent.getsockname()[1]), at(live[1])]
        with Client(addresses, nick="alice", connect_timeout=0.3) as client:
            client.connect()
            assert client.port == live[1]


def test_a_server_that_speaks_tls_is_skipped_for_chat(pki: dict[str, str]) -> None:
    with (
        running_server(tls_cert=pki["cert"], tls_key=pki["key"]) as tls,
        running_server() as live,
        Client([at(tls[1]), at(live[1])], nick="alice") as client,
    ):
        client.connect()
        assert client.port == live[1]
    # One address: refused for good, as before (a retrying connect does not go on).
    with running_server(tls_cert=pki["cert"], tls_key=pki["key"]) as tls:
        lone = Client("127.0.0.1", tls[1], nick="alice", backoff=FAST)
        with pytest.raises(Rejected, match="speaks TLS"):
            lone.connect(retry_for=WAIT)
        lone.close()


def test_a_tls_address_in_the_list_is_judged_for_its_own_host_port(
    pki: dict[str, str], tmp_path: Path
) -> None:
    # A plaintext address refusing, then a tls:// one: each speaks as its scheme says, and the
    # certificate is checked for the address it came from.
    from chatctl.client.trust import ServerTrust, client_context

    trust = ServerTrust(client_context(pki["ca"]), known_servers=tmp_path / "known")
    with running_server(tls_cert=pki["cert"], tls_key=pki["key"]) as tls:
        addresses = [at(dead_port()), at(tls[1], tls=True)]
        with Client(addresses, nick="alice", tls=trust) as client:
            client.connect()
            assert client.address == at(tls[1], tls=True)
            assert client.say("lobby", "over tls").wait(WAIT).seq == 1


def test_a_wrong_password_does_not_move_on() -> None:
    with (
        running_server(registration=Registration.open) as first,
        running_server(registration=Registration.open) as second,
        silent_listener() as third,
    ):
        servers.register(first, "alice", PASSWORD)
        servers.register(second, "alice", "another password")
        addresses = [at(first[1]), at(second[1]), at(third.getsockname()[1])]
        client = Client(addresses, nick="alice", account="alice", password="another password")
        with pytest.raises(Rejected) as caught:
            client.connect()
        client.close()
        assert caught.value.code == ErrorCode.LOGIN_FAILED
        assert f"127.0.0.1:{first[1]} refused the login as alice" in str(caught.value)
        assert client.welcome is None  # the second, which would have taken it, was not tried
        assert not contacted(third)


def test_a_wrong_password_stops_a_retrying_connect_too() -> None:
    with running_server(registration=Registration.open) as first, running_server() as second:
        servers.register(first, "alice", PASSWORD)
        addresses = [at(first[1]), at(second[1])]
        client = Client(addresses, nick="alice", account="alice", password="wrong", backoff=FAST)
        with pytest.raises(Rejected):
            client.connect(retry_for=WAIT)
        client.close()


@pytest.mark.parametrize(
    ("error", "moves"),
    [
        (ConnectFailed("could not connect to h:1: Connection refused"), True),
        (TimedOut("h:1 did not answer the handshake within 5 s"), True),
        (Rejected("too many connections", ErrorCode.TOO_MANY_CONNECTIONS), True),
        (Rejected("shutting down", ErrorCode.SERVER_SHUTDOWN), True),
        (Rejected("wrong account name or password", ErrorCode.LOGIN_FAILED), False),
        (Rejected("accounts only", ErrorCode.AUTH_REQUIRED), False),
        (Rejected("unsupported version", ErrorCode.UNSUPPORTED_VERSION), False),
        (Untrusted("cannot trust h:1"), False),
        (InsecureLink("not sending the password in clear"), False),
    ],
)
def test_what_moves_on_to_the_next_address(error: ChatctlError, moves: bool) -> None:
    assert moves_on(error) is moves


def test_reconnects_keep_the_server_that_works() -> None:
    # Connected through a proxy to the first server; the proxy drops the connection but the
    # path still works: the client comes back to the same address, not the next one.
    with running_server() as one, running_server() as two, proxy_to(one) as proxy:
        addresses = [at(dead_port()), at(proxy.port), at(two[1])]
        with Client(addresses, nick="alice", rooms=["lobby"], reconnect=True, backoff=FAST) as c:
            c.connect()
            assert c.port == proxy.port
            token = c.token
            proxy.cut()
            wait_for(c, Disconnected)
            back = wait_for(c, Reconnected)
            assert back.address == at(proxy.port) and c.port == proxy.port
            assert not back.new_session and c.token == token  # the same server resumed it


def test_when_the_current_server_dies_the_next_is_tried() -> None:
    first_port = dead_port()  # down at first: the client starts on the second
    with contextlib.ExitStack() as second_up, running_server() as third:
        second = second_up.enter_context(running_server())
        addresses = [at(first_port), at(second[1]), at(third[1])]
        client = Client(addresses, nick="alice", rooms=["lobby"], reconnect=True, backoff=FAST)
        with client:
            client.connect()
            assert client.port == second[1]
            second_up.close()  # the second stops (a Bye, then the end)
            wait_for(client, Disconnected)
            back = wait_for(client, Reconnected, timeout=3 * WAIT)
            assert back.address == at(third[1]) and client.port == third[1]
            assert back.new_session  # another server: it did not know the token
            assert client.say("lobby", "on the third").wait(WAIT).seq == 1


def test_failover_wraps_around_to_the_first_address() -> None:
    first_port = dead_port()
    with contextlib.ExitStack() as second_up:
        second = second_up.enter_context(running_server())
        addresses = [at(first_port), at(second[1])]
        client = Client(addresses, nick="alice", rooms=["lobby"], reconnect=True, backoff=FAST)
        with client:
            client.connect()
            assert client.port == second[1]
            with running_server(port=first_port):
                second_up.close()
                back = wait_for(client, Reconnected, timeout=3 * WAIT)
                assert back.address == at(first_port)
                assert client.say("lobby", "wrapped").wait(WAIT).seq == 1


def test_a_message_queued_while_down_goes_to_the_next_server() -> None:
    with contextlib.ExitStack() as first_up, running_server() as second:
        first = first_up.enter_context(running_server())
        with (
            Client(
                [at(first[1]), at(second[1])],
                nick="alice",
                rooms=["lobby"],
                reconnect=True,
                backoff=FAST,
            ) as alice,
            joined(second, "bob", "lobby") as bob,
        ):
            alice.connect()
            first_up.close()
            wait_for(alice, Disconnected)
            queued = alice.say("lobby", "while failing over")
            wait_for(alice, Reconnected, timeout=3 * WAIT)
            assert queued.wait(WAIT).seq >= 1
            got = wait_for(bob, Message, lambda m: m.sender == "alice")
            assert got.text == "while failing over"


def test_a_final_refusal_on_reconnect_closes() -> None:
    # Logged in on the first; it dies; the second refuses the login: the client gives up
    # instead of going round again with a wrong password.
    with (
        contextlib.ExitStack() as first_up,
        running_server(registration=Registration.open) as second,
    ):
        first = first_up.enter_context(running_server(registration=Registration.open))
        servers.register(first, "alice", PASSWORD)
        servers.register(second, "alice", "another password")
        client = Client(
            [at(first[1]), at(second[1])],
            nick="alice",
            account="alice",
            password=PASSWORD,
            reconnect=True,
            backoff=FAST,
        )
        with client:
            client.connect()
            first_up.close()
            closed = wait_for(client, Closed, timeout=3 * WAIT)
            assert isinstance(closed.error, Rejected)
            assert closed.error.code == ErrorCode.LOGIN_FAILED


def test_reconnected_says_where_in_text_and_json() -> None:
    welcome = Welcome(protocol=1, server="chatctl", version="1", nick="alice", token="t")
    event = Reconnected(welcome=welcome, attempts=1, address=Address("h2", 1060))
    text = TextRenderer(lambda: "alice", colour=False, single_line=True).render(event)
    assert text is not None and "reconnected to h2:1060 as alice" in text
    record = event_record(event)
    assert record is not None
    assert record["address"] == "h2:1060" and record["new_session"] is False
    fresh = Reconnected(welcome=welcome, attempts=1, address=Address("::1", 5), new_session=True)
    text = TextRenderer(lambda: "alice", colour=False, single_line=True).render(fresh)
    assert text is not None and "reconnected to [::1]:5 as alice (a new session" in text
    assert event_record(fresh) == {**record, "address": "[::1]:5", "new_session": True}


# -- join and send --------------------------------------------------------------------------------


def test_join_in_a_pipe_fails_over_when_its_server_is_killed() -> None:
    with serve_process() as first, running_server() as second:
        servers_arg = f"chat://127.0.0.1:{first.port}, 127.0.0.1:{second[1]}"
        join = JoinProcess(
            first.port, servers_arg, "-n", "piper", "--format", "json", "--reconnect", stdin=True
        )
        try:
            join.expect('"history_end"')
            with joined(("127.0.0.1", first.port), "ann", "lobby") as ann:
                join.send("on the first")
                assert wait_for(ann, Message, lambda m: m.sender == "piper").text == "on the first"
            first.proc.kill()
            join.expect('"disconnected"')
            line = join.expect('"reconnected"', timeout=3 * WAIT)
            record = json.loads(line)
            assert record["address"] == f"127.0.0.1:{second[1]}"
            assert record["new_session"] is True  # the second server has its own store
            with joined(second, "bob", "lobby") as bob:
                join.send("on the second")
                got = wait_for(bob, Message, lambda m: m.sender == "piper")
                assert got.text == "on the second"
                bob.say("lobby", "welcome over").wait(WAIT)
                join.expect("welcome over")
            code, err = join.finish(close_stdin=True)
            assert code == 0, err
        finally:
            join.kill()


def test_join_text_says_which_server_it_reconnected_to() -> None:
    with serve_process() as first, running_server() as second:
        servers_arg = f"127.0.0.1:{first.port},127.0.0.1:{second[1]}"
        join = JoinProcess(first.port, servers_arg, "-n", "piper", "--reconnect", stdin=True)
        try:
            join.expect("#lobby")
            first.proc.kill()
            line = join.expect("reconnected", timeout=3 * WAIT)
            assert f"reconnected to 127.0.0.1:{second[1]} as piper" in line
            code, err = join.finish(close_stdin=True)
            assert code == 0, err
        finally:
            join.kill()


def test_join_uses_the_second_address_when_nothing_listens_on_the_first() -> None:
    with running_server() as live:
        result = run_chatctl(
            "join",
            f"127.0.0.1:{dead_port()},127.0.0.1:{live[1]}",
            "--format",
            "json",
            "-n",
            "piper",
            stdin="hello\n",
        )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records if r["type"] == "message" and r["own"]] == ["hello"]


def test_send_with_a_dead_first_address_succeeds_on_the_second() -> None:
    with running_server() as live, joined(live, "bob", "lobby") as bob:
        result = run_chatctl(
            "send", f"chat://127.0.0.1:{dead_port()},chat://127.0.0.1:{live[1]}", "hi there"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("delivered to #lobby seq 1, reached 1 member")
        assert wait_for(bob, Message).text == "hi there"


def test_send_exits_4_only_when_all_fail_and_says_what_each_said() -> None:
    first, second = dead_port(), dead_port()
    result = run_chatctl("send", f"127.0.0.1:{first},127.0.0.1:{second}", "hi")
    assert result.returncode == ExitCode.CONNECT
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "none of 2 servers answered" in err
    assert f"127.0.0.1:{first}" in err and f"127.0.0.1:{second}" in err


def test_send_with_a_wrong_password_does_not_try_the_next_server() -> None:
    with (
        running_server(registration=Registration.open) as first,
        running_server(registration=Registration.open) as second,
        joined(second, "watcher", "lobby") as watcher,
    ):
        servers.register(first, "alice", PASSWORD)
        servers.register(second, "alice", "another password")
        result = run_chatctl(
            "send",
            f"127.0.0.1:{first[1]},127.0.0.1:{second[1]}",
            "--account",
            "alice",
            "hi",
            env={PASSWORD_VAR: "another password"},
        )
        assert result.returncode == ExitCode.REJECTED, result.stderr
        assert f"127.0.0.1:{first[1]} refused the login as alice" in result.stderr
        # The second never saw alice: the watcher's sync comes back with nothing before it.
        seen: list[object] = []
        assert watcher.sync(WAIT)
        while (event := watcher.next_event(0)) is not None:
            seen.append(event)
        assert not [e for e in seen if isinstance(e, (Message, Notice))]


def test_a_bad_item_in_the_list_is_a_usage_error() -> None:
    result = run_chatctl("send", "127.0.0.1:1,,127.0.0.1:2", "hi")
    assert result.returncode == ExitCode.USAGE
    assert "address 2 of 3" in result.stderr and "empty" in result.stderr


def test_an_untrusted_certificate_does_not_move_on(pki: dict[str, str], tmp_path: Path) -> None:
    from chatctl.client.trust import ServerTrust, client_context

    trust = ServerTrust(client_context(), known_servers=tmp_path / "known")  # not the test CA
    with (
        running_server(tls_cert=pki["cert"], tls_key=pki["key"]) as tls,
        silent_listener() as next_one,
    ):
        addresses = [at(tls[1], tls=True), at(next_one.getsockname()[1])]
        client = Client(addresses, nick="alice", tls=trust, reconnect=True, backoff=FAST)
        with pytest.raises(Untrusted, match=f"cannot trust 127.0.0.1:{tls[1]}"):
            client.connect(retry_for=WAIT)
        client.close()
        assert not contacted(next_one)
