"""`chatctl join` says only what the server confirmed (issue #13): a refused /join leaves the
current room alone, "left" is the server's word, and SIGTERM is a clean quit. Real
subprocesses against real servers."""

from __future__ import annotations

import json
import signal
from typing import Any

from chatctl.client import Client
from chatctl.protocol import Error, Join, Message, Notice
from tests.clients import WAIT, JoinProcess, joined, wait_for
from tests.servers import Client as RawClient
from tests.servers import run_chatctl, running_server


def pipe(port: int, lines: list[str], *args: str) -> list[dict[str, Any]]:
    result = run_chatctl(
        "join", "-p", str(port), "-n", "carol", "--format", "json", *args,
        stdin="\n".join(lines) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def own_messages(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["room"], r["text"]) for r in records if r["type"] == "message" and r["own"]]


def infos(records: list[dict[str, Any]]) -> list[str]:
    return [r["text"] for r in records if r["type"] == "info"]


def test_an_invalid_room_is_refused_at_once_in_the_servers_words(
    server: tuple[str, int], watcher: Client
) -> None:
    records = pipe(server[1], ["/join bad!room", "still here"])
    assert own_messages(records) == [("lobby", "still here")]
    with RawClient(*server) as raw:
        raw.hello("raw")
        raw.send(Join(room="bad!room"))
        said = raw.wait_for(Error)
    assert infos(records) == [f"{said.message} (invalid_room)"]
    from chatctl.ui.commands import room_problem  # here: the test fails, not the module

    assert room_problem("bad!room") == f"{said.message} (invalid_room)"
    assert not [r for r in records if r["type"] == "error"]  # nothing was sent


def test_a_join_the_server_refuses_leaves_the_current_room() -> None:
    with running_server(max_rooms=1) as addr:
        records = pipe(addr[1], ["/join second", "still in lobby", "/part second"])
    errors = [r for r in records if r["type"] == "error"]
    assert [e["name"] for e in errors] == ["too_many_rooms"]
    assert own_messages(records) == [("lobby", "still in lobby")]
    assert infos(records) == ["you are not in #second (not_in_room)"]
    assert not [r for r in records if r["type"] == "notice" and r["room"] == "second"]


def test_the_client_lists_a_room_only_once_the_server_confirms_it() -> None:
    with running_server(max_rooms=2) as addr, joined(addr, "dora", "lobby") as client:
        client.join("Dev")
        assert client.wait_joined("dev", WAIT) is True
        assert client.rooms == ("lobby", "dev")
        client.join("third")
        assert client.wait_joined("third", WAIT) is False
        assert wait_for(client, Error).code == 207
        assert client.rooms == ("lobby", "dev")


def test_part_says_left_only_on_the_servers_notice(
    server: tuple[str, int], watcher: Client
) -> None:
    lines = ["/part nonexistent", "/join dev", "/part dev", "back in lobby"]
    records = pipe(server[1], lines)
    assert infos(records)[0] == "you are not in #nonexistent (not_in_room)"
    assert not [r for r in records if r["type"] == "error"]  # refused here, not by the server
    left = next(i for i, r in enumerate(records) if r["type"] == "notice" and r["kind"] == "left")
    assert (records[left]["room"], records[left]["nick"]) == ("dev", "carol")
    now = records.index({"type": "info", "text": "now in #lobby"})
    assert now > left  # after the server's notice, never instead of it
    assert not any("left" in text for text in infos(records))
    assert own_messages(records) == [("lobby", "back in lobby")]


def test_sigterm_in_a_pipe_says_bye_and_exits_zero(
    server: tuple[str, int], watcher: Client
) -> None:
    join = JoinProcess(server[1], "-n", "termy", stdin=True)
    try:
        wait_for(watcher, Notice, lambda n: n.kind == "joined" and n.nick == "termy")
        join.send("before the end")
        assert wait_for(watcher, Message).text == "before the end"
        join.proc.send_signal(signal.SIGTERM)
        code, err = join.finish()
        assert code == 0, err
        notice = wait_for(watcher, Notice, lambda n: n.nick == "termy")
        assert notice.kind == "left"  # not "dropped"
    finally:
        join.kill()
