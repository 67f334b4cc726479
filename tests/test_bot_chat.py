"""`chatctl bot` in a real chat: a real server, the bot as a `chatctl` subprocess, real clients."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from chatctl.bot.runner import load_system
from chatctl.protocol import DirectMessage, Tell
from tests.bots import bot_in_lobby, bot_process, from_bot, wait_joined
from tests.servers import Client, run_chatctl, running_server, serve_process


def test_offline_bot_answers_mentions_direct_messages_and_summaries() -> None:
    with (
        running_server() as (host, port),
        Client.connect(host, port, "alice", "lobby") as alice,
        bot_process(host, port) as bot,
        Client.connect(host, port, "bob", "lobby") as bob,
    ):
        wait_joined(alice)
        alice.say("lobby", "@ai how do I send a direct message?")
        answer = from_bot(alice)
        assert answer.text.startswith("alice: Send a direct message")
        assert "/msg" in answer.text
        assert from_bot(bob).text == answer.text  # the whole room sees it

        bob.send(Tell(msg_id="t1", to="ai", text="how do I change my nick?"))
        private = bob.wait_for(DirectMessage, lambda m: m.sender == "ai")
        assert "/nick" in private.text

        for who, text in [
            (bob, "The deploy is blocked on the database migration of the orders table."),
            (alice, "Is it the new index again? It timed out on staging last week."),
            (bob, "Yes, the index on the orders table takes twenty minutes to build."),
            (alice, "I can build the index concurrently, then the table is not locked."),
            (bob, "Concurrent builds cannot run inside the migration's transaction."),
            (alice, "Right, I will put the index in a separate migration step."),
            (bob, "Who reviews the migration before the deploy tomorrow?"),
            (alice, "Carol reviews it, she wrote the orders table schema."),
            (bob, "Then let's deploy tomorrow at ten, after the review."),
            (alice, "Good, I will tell support about the deploy at ten."),
        ]:
            who.say("lobby", text)
        bob.say("lobby", "@ai summary")
        summary = from_bot(bob).text
        assert summary.startswith("Last ")
        assert 'bob, decision: "Then let\'s deploy tomorrow at ten, after the review."' in summary
        assert re.search(r"Topics: [^.]*\bmigration\b", summary)
        assert len(summary) <= 1000 / 3  # the eleven lines are well over 1000 characters
        bot.wait_for_line(r"replied \(summary\) in #lobby")


def test_bot_never_answers_itself_or_other_bots() -> None:
    with (
        running_server() as (host, port),
        Client.connect(host, port, "alice", "lobby") as alice,
        bot_process(host, port, "--every-lines", "1") as bot,
        Client.connect(host, port, "newsbot", "lobby") as newsbot,
    ):
        wait_joined(alice)
        newsbot.say("lobby", "@ai are you a bot too?")
        newsbot.say("lobby", "ai: please answer me")
        alice.say("lobby", "@ai hello")
        # The first thing the bot says is its answer to alice: the bot's lines were passed
        # over, and its own reply did not trigger --every-lines 1.
        assert from_bot(alice).text.startswith("alice: Hello!")
        alice.say("lobby", "@ai thanks")
        assert from_bot(alice).text == "alice: You're welcome."
        assert not any("newsbot" in line and "replied" in line for line in bot.lines)


def test_two_bots_without_bot_names_stop_talking_to_each_other() -> None:
    """sage and oracle both speak after every line. Each takes alice's line, then answers the
    other once at machine speed; the next fast trigger is skipped, with a log line."""
    cadence = ("--every-lines", "1")
    with (
        running_server() as (host, port),
        Client.connect(host, port, "alice", "lobby") as alice,
        bot_process(host, port, "--nick", "sage", *cadence) as sage,
        bot_process(host, port, "--nick", "oracle", *cadence) as oracle,
    ):
        wait_joined(alice, "sage")
        wait_joined(alice, "oracle")
        alice.say("lobby", "hello both of you")
        guard = r"did not answer (sage|oracle) in #lobby: .* like a bot"
        sage.wait_for_line(guard)
        oracle.wait_for_line(guard)
    # Both have exited: their logs are complete.
    replies = [ln for ln in sage.lines + oracle.lines if "replied (chime)" in ln]
    assert 2 <= len(replies) <= 4, "".join(sage.lines + oracle.lines)


def test_every_lines_cadence_in_a_real_room() -> None:
    with bot_in_lobby("--every-lines", "3") as (alice, _):
        alice.say("lobby", "first thought")
        alice.say("lobby", "second thought")
        alice.say("lobby", "third thought")
        recap = from_bot(alice).text
        assert re.match(r"Last 3 messages in #lobby, \d\d:\d\d, from alice \(3\)\.", recap)


def test_bot_survives_a_server_restart() -> None:
    with serve_process() as first:
        port = first.port
        with bot_process(first.host, port, "--room", "dev") as bot:
            first.proc.kill()
            first.proc.wait(timeout=10)
            bot.wait_for_line(r"disconnected")
            with (
                serve_process("--port", str(port)) as second,
                Client.connect(second.host, port, "carol", "dev") as carol,
            ):
                bot.wait_for_line(r"reconnected", timeout=20)
                carol.say("dev", "@ai how do I leave a room?")
                assert "/part" in from_bot(carol).text


def test_every_seconds_cadence_in_a_real_room() -> None:
    with bot_in_lobby("--every-seconds", "1") as (alice, _):
        alice.say("lobby", "is anyone around?")
        recap = from_bot(alice).text
        assert re.match(r"Last 1 message in #lobby, \d\d:\d\d, from alice \(1\)\.", recap)


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return run_chatctl("bot", *args, timeout=timeout)


def test_bad_options_are_one_line_usage_errors() -> None:
    for args, message in [
        (("--backend", "gpt"), "unknown backend 'gpt'"),
        (("--on-failure", "shout"), "--on-failure must be one of notice, silent"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_unreadable_files_and_models_are_clear_errors(tmp_path: Path) -> None:
    for args, message in [
        (("--knowledge", str(tmp_path / "missing.md")), "cannot read knowledge file"),
        (("--system", f"@{tmp_path / 'missing.txt'}"), "cannot read the system prompt"),
        (("--backend", "local", "--model", str(tmp_path / "none.gguf")), "no model file"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_no_server_exits_4() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        result = run_cli("127.0.0.1", "--port", str(port))
    assert result.returncode == 4, result.stderr
    assert "could not connect" in result.stderr and "Traceback" not in result.stderr


def test_system_prompt_and_knowledge_files(tmp_path: Path) -> None:
    (tmp_path / "system.txt").write_text("You are {nick}, terse.\n", encoding="utf-8")
    assert load_system(f"@{tmp_path / 'system.txt'}") == "You are {nick}, terse."
    assert load_system("inline prompt") == "inline prompt"
    (tmp_path / "kb.md").write_text("# Coffee\nThe coffee machine is on floor 3.\n")
    with bot_in_lobby("--knowledge", str(tmp_path / "kb.md")) as (alice, _):
        alice.say("lobby", "@ai where is the coffee machine?")
        assert "floor 3" in from_bot(alice).text
