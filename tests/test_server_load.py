"""Many clients, many connections, and shutdown under load, over real sockets."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from chatctl.protocol import (
    Ack,
    Bye,
    ConnectionClosed,
    ErrorCode,
    Hello,
    Join,
    ListRooms,
    Message,
    RoomList,
    Say,
    encode,
)
from tests.servers import Client, running_server, serve_process


def test_many_clients_in_several_rooms_get_exactly_the_others_messages() -> None:
    rooms = ["red", "green", "blue"]
    with running_server(rate=0) as (host, port):
        clients: list[tuple[Client, list[str]]] = []
        for i in range(30):
            mine = [rooms[i % 3]] + ([rooms[(i + 1) % 3]] if i % 2 else [])
            clients.append((Client.connect(host, port, f"user{i}", *mine), mine))
        # Everyone sends 5 messages to each of its rooms, pipelined, then collects the acks.
        acks: dict[str, list[tuple[int, str]]] = defaultdict(list)  # room -> (seq, sender)
        for client, mine in clients:
            for room in mine:
                for n in range(5):
                    client.send(Say(msg_id=f"{room}-{n}", room=room, text=f"{client.nick} {n}"))
        for client, mine in clients:
            for _ in range(5 * len(mine)):
                ack = client.wait_for(Ack)
                acks[ack.room].append((ack.seq, client.nick))
        for room, seen in acks.items():
            assert sorted(s for s, _ in seen) == list(range(1, len(seen) + 1)), room
        for client, mine in clients:
            expected = sorted(
                (room, seq) for room in mine for seq, sender in acks[room] if sender != client.nick
            )
            got = [e for e in client.seen if type(e) is Message]
            while len(got) < len(expected):
                got.append(client.wait_for(Message))
            assert sorted((m.room, m.seq) for m in got) == expected
            for room in mine:  # in order within each room
                seqs = [m.seq for m in got if m.room == room]
                assert seqs == sorted(seqs)


def test_a_thousand_simultaneous_connections() -> None:
    # All from 127.0.0.1: over the default per-address limit, so raised like any load test's.
    with running_server(rate=0, join_history=0, max_per_ip=100_000, connect_rate=0) as (
        host,
        port,
    ):
        clients = [
            Client.connect(host, port, f"c{i}", f"room{i % 10}", timeout=30) for i in range(1000)
        ]
        clients[0].send(ListRooms())
        counts = clients[0].wait_for(RoomList).rooms
        assert counts == {f"room{r}": 100 for r in range(10)}
        for r in range(10):
            assert clients[r].say(f"room{r}", f"hello room {r}").recipients == 99
        for i, client in enumerate(clients[10:], start=10):
            message = client.wait_for(Message)
            assert (message.room, message.text) == (f"room{i % 10}", f"hello room {i % 10}")


def _chatter(client: Client, outcome: dict[str, object]) -> None:
    """Send and read until the server says goodbye; record how it ended."""
    n = 0
    try:
        while True:
            n += 1
            try:
                client.send(Say(msg_id=str(n), room="lobby", text=f"load {n}"))
            except OSError:
                pass  # the server has stopped reading: its Bye is on the way
            while True:
                event = client.recv()
                if type(event) is Bye:
                    outcome["bye"] = event
                    return
                if type(event) is ConnectionClosed:
                    outcome["closed"] = True
                    return
                if type(event) is Ack:
                    outcome["acked"] = n
                    break
    except OSError as exc:  # the server closed while we were still sending
        outcome.setdefault("error", exc)


def test_sigterm_under_load_says_bye_to_everyone_and_exits_zero() -> None:
    with serve_process("--rate", "0") as server:
        clients = [Client.connect(server.host, server.port, f"load{i}", "lobby") for i in range(20)]
        outcomes: list[dict[str, object]] = [{} for _ in clients]
        threads = [
            threading.Thread(target=_chatter, args=(c, o), daemon=True)
            for c, o in zip(clients, outcomes, strict=True)
        ]
        for thread in threads:
            thread.start()
        # Under load: wait until every chatter has had at least one ack.
        server.wait_for_line(r"load19")  # its hello line
        for outcome in outcomes:
            _wait_until(lambda o=outcome: "acked" in o)  # type: ignore[misc]
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        for thread in threads:
            thread.join(timeout=20)
        byes = [o.get("bye") for o in outcomes]
        assert all(isinstance(b, Bye) and b.code == ErrorCode.SERVER_SHUTDOWN for b in byes), (
            outcomes
        )
        server.wait_for_line(r"server stopped")


def test_second_signal_exits_at_once() -> None:
    # A client that never reads keeps the first shutdown waiting on its output.
    with (
        serve_process("--rate", "0", "--max-output", str(64 * 1024 * 1024)) as server,
        socket.socket() as sleeper,
    ):
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.connect((server.host, server.port))
        sleeper.sendall(encode(Hello(version=1, nick="sleeper")) + encode(Join(room="lobby")))
        talker = Client.connect(server.host, server.port, "talker", "lobby")
        for i in range(1000):
            talker.send(Say(msg_id=str(i), room="lobby", text="x" * 8000))
        for _ in range(1000):
            talker.wait_for(Ack)
        server.proc.send_signal(signal.SIGINT)
        server.wait_for_line(r"shutting down")
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=20) == 128 + signal.SIGINT


def _wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `condition` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
