"""The `openai` backend against a fault-injecting OpenAI-compatible server on 127.0.0.1.

The fake server is real HTTP on a real socket. Each request takes the next step of a script:
an SSE stream of chunks, an HTTP error, a stall, malformed JSON or plain bytes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chatctl.bot.backend import BackendError, chat_messages, system_text
from chatctl.bot.brain import ChatLine, Prompt, TurnKind
from chatctl.bot.openai_compat import OpenAIBackend, api_key_from_env
from tests.bots import bot_in_lobby, bot_process, from_bot, wait_joined
from tests.servers import Client, ServeProcess, running_server

Step = Callable[[BaseHTTPRequestHandler], None]


def chunk(text: str) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]})


def sse(
    *pieces: str, done: bool = True, hold: threading.Event | None = None, hold_at: int = 0
) -> Step:
    """A streamed reply, one event per piece; with `hold`, stall after piece `hold_at`."""

    def step(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()
        for i, piece in enumerate(pieces):
            h.wfile.write(f"data: {piece}\n\n".encode())
            h.wfile.flush()
            if hold is not None and i == hold_at:
                hold.wait(10)
        if done:
            h.wfile.write(b"data: [DONE]\n\n")

    return step


def reply(
    *texts: str, done: bool = True, hold: threading.Event | None = None, hold_at: int = 0
) -> Step:
    return sse(*(chunk(t) for t in texts), done=done, hold=hold, hold_at=hold_at)


def status(code: int, body: str = "{}", retry_after: str | None = None) -> Step:
    def step(h: BaseHTTPRequestHandler) -> None:
        data = body.encode()
        h.send_response(code)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        if retry_after is not None:
            h.send_header("retry-after", retry_after)
        h.end_headers()
        h.wfile.write(data)

    return step


def raw(body: bytes, content_type: str = "application/json") -> Step:
    def step(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", content_type)
        h.end_headers()
        h.wfile.write(body)

    return step


def stall(release: threading.Event) -> Step:
    """Accept the request and say nothing until released (the test's teardown releases it)."""

    def step(h: BaseHTTPRequestHandler) -> None:
        release.wait(10)

    return step


@dataclass
class FakeModelServer:
    """Scripted OpenAI-compatible server. `script` steps are used in order; when it runs out,
    every request gets `default`."""

    script: list[Step] = field(default_factory=list)
    default: Step = field(default_factory=lambda: reply("Hello", " from", " the fake."))
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    status(200, json.dumps({"data": [{"id": m} for m in fake.models]}))(self)
                else:
                    status(404)(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                fake.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                step = fake.script.pop(0) if fake.script else fake.default
                try:
                    step(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on us, as it should

        return Handler


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    server_state = FakeModelServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server_state.handler())
    httpd.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server_state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


PROMPT = Prompt(
    kind=TurnKind.ANSWER,
    bot_nick="ai",
    question="how are you?",
    asker="alice",
    context=(
        ChatLine(sender="bob", text="morning all", ts=1.0, room="lobby"),
        ChatLine(sender="ai", text="good morning", ts=2.0, room="lobby"),
    ),
    room="lobby",
    max_chars=300,
)


def backend(fake: FakeModelServer, **kwargs: Any) -> OpenAIBackend:
    settings: dict[str, Any] = {
        "base_url": fake.url,
        "model": "m",
        "api_key": None,
        "stall_timeout": 0.5,
        "timeout": 10.0,
        "retries": 2,
        "backoff": 0.01,
    }
    settings.update(kwargs)
    return OpenAIBackend(**settings)


def test_streams_the_reply_piece_by_piece(fake: FakeModelServer) -> None:
    fake.script = [reply("Fine", ", thanks", "!")]
    b = backend(fake)
    assert list(b.complete(PROMPT)) == ["Fine", ", thanks", "!"]
    assert b.chunks == 3
    (request,) = fake.requests
    assert request["stream"] is True and request["model"] == "m"
    assert request["max_tokens"] == 100
    assert [m["role"] for m in request["messages"]] == ["system", "user", "assistant", "user"]
    assert request["messages"][1]["content"] == "bob: morning all"
    assert request["messages"][-1]["content"] == "alice: how are you?"


def test_api_key_comes_from_the_environment(
    fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CHATCTL_BOT_API_KEY", raising=False)
    assert api_key_from_env() is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert api_key_from_env() == "sk-openai"
    monkeypatch.setenv("CHATCTL_BOT_API_KEY", "sk-chatctl")
    b = backend(fake, api_key=api_key_from_env())
    list(b.complete(PROMPT))
    assert fake.headers[0]["authorization"] == "Bearer sk-chatctl"


def test_model_defaults_to_what_the_server_lists(fake: FakeModelServer) -> None:
    list(backend(fake, model=None).complete(PROMPT))
    assert fake.requests[0]["model"] == "fake-model"


def test_retries_server_errors_with_backoff(fake: FakeModelServer) -> None:
    fake.script = [status(503), status(429, retry_after="0"), reply("recovered")]
    assert list(backend(fake).complete(PROMPT)) == ["recovered"]
    assert len(fake.requests) == 3


def test_gives_up_after_the_retries(fake: FakeModelServer) -> None:
    fake.default = status(502)
    with pytest.raises(BackendError, match="HTTP 502"):
        list(backend(fake, retries=2).complete(PROMPT))
    assert len(fake.requests) == 3


def test_client_errors_are_not_retried(fake: FakeModelServer) -> None:
    fake.script = [status(401, '{"error": {"message": "bad key"}}')]
    with pytest.raises(BackendError, match="HTTP 401"):
        list(backend(fake).complete(PROMPT))
    assert len(fake.requests) == 1


def test_a_stall_is_a_timeout(fake: FakeModelServer) -> None:
    fake.default = stall(fake.release)
    with pytest.raises(BackendError, match="timed out"):
        list(backend(fake, retries=1).complete(PROMPT))
    assert len(fake.requests) == 2


def test_a_stall_mid_stream_is_not_retried(fake: FakeModelServer) -> None:
    hold = threading.Event()
    fake.script = [reply("partial", " more", hold=hold)]
    got: list[str] = []
    try:
        with pytest.raises(BackendError, match="timed out"):
            for piece in backend(fake).complete(PROMPT):
                got.append(piece)
    finally:
        hold.set()
    assert got == ["partial"]
    assert len(fake.requests) == 1  # a retry would repeat text already in the chat


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (sse("{not json"), "malformed JSON"),
        (sse(json.dumps({"error": {"message": "model overloaded"}})), "model overloaded"),
        (sse(json.dumps([1, 2])), "not an object"),
        (sse(json.dumps({"choices": "x"})), "without choices"),
        (sse(json.dumps({"choices": [{"delta": {"content": 7}}]})), "not text"),
        (sse(), "empty reply"),
        (reply("", " "), "empty reply"),
        (reply(done=False), "without a reply"),
        (raw(b"<html>oops</html>"), "malformed JSON"),
        (raw(b"data: " + b"x" * (2 * 1024 * 1024), "text/event-stream"), "longer than"),
    ],
)
def test_garbage_is_a_clear_backend_error(fake: FakeModelServer, step: Step, error: str) -> None:
    fake.script = [step]
    with pytest.raises(BackendError, match=error):
        list(backend(fake).complete(PROMPT))
    assert len(fake.requests) == 1


def test_a_stream_without_done_still_counts(fake: FakeModelServer) -> None:
    fake.script = [reply("no", " done", done=False)]
    assert "".join(backend(fake).complete(PROMPT)) == "no done"


def test_a_server_that_ignores_stream_gets_one_piece(fake: FakeModelServer) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "whole reply"}}]}
    fake.script = [raw(json.dumps(body).encode())]
    assert list(backend(fake).complete(PROMPT)) == ["whole reply"]


def test_nobody_listening_is_a_backend_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        b = OpenAIBackend(
            base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=None, backoff=0.01
        )
        with pytest.raises(BackendError, match="cannot reach"):
            list(b.complete(PROMPT))


def test_summary_and_chime_prompts() -> None:
    summary = Prompt(kind=TurnKind.SUMMARY, bot_nick="ai", context=PROMPT.context)
    messages = chat_messages(summary, None)
    assert len(messages) == 2 and "bob: morning all" in messages[1]["content"]
    chime = Prompt(kind=TurnKind.CHIME, bot_nick="ai", context=PROMPT.context)
    assert chat_messages(chime, "Be {nick}.")[0]["content"] == "Be ai."
    assert system_text("odd {brace", chime) == "odd {brace"


# -- the openai backend in a real chat -----------------------------------------------------------

LONG = "This answer is long enough to need several chat frames. " * 6


def test_bot_streams_a_long_reply_into_frames_that_fit(fake: FakeModelServer) -> None:
    fake.script = [reply(*(w + " " for w in LONG.split()))]
    args = ("--backend", "openai", "--base-url", fake.url, "--model", "m", "--max-reply", "200")
    with bot_in_lobby(*args, max_text=64) as (alice, bot):
        alice.say("lobby", "@ai tell me a long story")
        frames = [from_bot(alice)]
        log = bot.wait_for_line(
            r"replied \(answer\) in #lobby: (\d+) frame\(s\), (\d+) chars, (\d+) chunk"
        )
        frames += [from_bot(alice) for _ in range(int(log[1]) - 1)]
        assert len(frames) >= 3
        assert all(len(f.text.encode()) <= 64 for f in frames)
        text = " ".join(f.text for f in frames)
        assert LONG.startswith(text.removesuffix("…").rstrip())
        assert len(text) <= 201 and text.endswith("…")  # cut at --max-reply
        assert int(log[3]) > 1  # streamed: many chunks
        assert fake.requests[0]["messages"][-1]["content"] == "alice: tell me a long story"


def test_backend_failure_gives_one_notice_then_silence(fake: FakeModelServer) -> None:
    fake.script = [status(400), status(400)]
    fake.default = reply("back to normal")
    args = ("--backend", "openai", "--base-url", fake.url, "--model", "m")
    with (
        running_server() as (host, port),
        Client.connect(host, port, "alice", "lobby") as alice,
        Client.connect(host, port, "bob", "lobby") as bob,
        bot_process(host, port, *args) as bot,
    ):
        wait_joined(alice)
        alice.say("lobby", "@ai first try")
        assert "not answering" in from_bot(alice).text
        # Two people: one person typing this fast would be a bot to the loop guard.
        alice.say("lobby", "@ai second try")
        bob.say("lobby", "@ai third try")
        # No second notice within the minute: the next thing the bot says is the answer.
        assert from_bot(alice).text == "back to normal"
        assert len(fake.requests) == 3
        assert sum("HTTP 400" in line for line in bot.lines) == 2


def test_on_failure_silent_says_nothing(fake: FakeModelServer) -> None:
    fake.script = [raw(b"garbage", "text/event-stream")]
    fake.default = reply("working again")
    args = ("--backend", "openai", "--base-url", fake.url, "--on-failure", "silent")
    with bot_in_lobby(*args) as (alice, bot):
        alice.say("lobby", "@ai are you there?")
        bot.wait_for_line(r"backend openai failed for #lobby")
        alice.say("lobby", "@ai and now?")
        assert from_bot(alice).text == "working again"


def test_a_copied_nick_prefix_is_dropped(fake: FakeModelServer) -> None:
    fake.script = [reply("ai", ": Paris", " is the capital.")]
    args = ("--backend", "openai", "--base-url", fake.url, "--model", "m")
    with bot_in_lobby(*args) as (alice, _):
        alice.say("lobby", "@ai what is the capital of France?")
        assert from_bot(alice).text == "Paris is the capital."


FIRST = "A chat room is where people who share an interest meet to talk, all at the same time."


@contextmanager
def asked_while_held(
    fake: FakeModelServer, pieces: list[str], *args: str, hold_at: int = 0
) -> Iterator[tuple[str, Client, ServeProcess]]:
    """alice asks the bot (openai backend on `fake`) while the model server holds its reply
    after piece `hold_at`. Yields the first frame, which reached the chat before the release,
    then alice and the bot for what follows."""
    hold = threading.Event()
    fake.script = [reply(*pieces, hold=hold, hold_at=hold_at)]
    with bot_in_lobby("--backend", "openai", "--base-url", fake.url, *args) as (alice, bot):
        alice.say("lobby", "@ai well?")
        try:
            first = from_bot(alice, timeout=5).text
        finally:
            hold.set()
        yield first, alice, bot


def test_a_streamed_reply_reaches_the_chat_sentence_by_sentence(fake: FakeModelServer) -> None:
    """The first sentence is in the chat while the model is still writing the second."""
    words = [w + " " for w in FIRST.split()] + ["Anyone "]
    pieces = [*words, "in the room sees", " every message."]
    with asked_while_held(fake, pieces, hold_at=len(words) - 1) as (first, alice, bot):
        assert first == FIRST  # sent at the sentence end (a pause would have sent "Anyone" too)
        assert from_bot(alice).text == "Anyone in the room sees every message."
        bot.wait_for_line(r"replied \(answer\) in #lobby: 2 frame\(s\)")


def test_a_pause_in_the_stream_sends_the_words_so_far(fake: FakeModelServer) -> None:
    pieces = ["Let me think about that question", " for a moment."]
    with asked_while_held(fake, pieces) as (first, alice, _):
        assert first == "Let me think about that"  # "question" may yet grow: it waits
        assert from_bot(alice).text == "question for a moment."


def test_reply_timeout_cuts_a_slow_reply(fake: FakeModelServer) -> None:
    pieces = ["The short answer is", " yes."]
    with asked_while_held(fake, pieces, "--reply-timeout", "0.5") as (first, _, bot):
        assert first == "The short answer is…"
        bot.wait_for_line(r"too slow for #lobby: reply cut at the 0.5 s reply timeout")


def test_reply_timeout_gives_the_failure_notice(
    fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that never answers: at the reply timeout (here from the environment) the bot
    says so once, logs it, and keeps working."""
    fake.script = [stall(fake.release)]
    fake.default = reply("back again")
    monkeypatch.setenv("CHATCTL_BOT_REPLY_TIMEOUT", "0.5")
    args = ("--backend", "openai", "--base-url", fake.url, "--model", "m")
    with bot_in_lobby(*args) as (alice, bot):
        alice.say("lobby", "@ai are you there?")
        assert "not answering" in from_bot(alice, timeout=5).text
        slow = bot.wait_for_line(r"backend openai still working on a reply for #lobby")
        failed = bot.wait_for_line(r"backend openai failed for #lobby: no reply within 0.5 s")
        assert bot.lines.index(slow.string) < bot.lines.index(failed.string)
        alice.say("lobby", "@ai and now?")
        assert from_bot(alice).text == "back again"


# -- summaries from a model, grounded ------------------------------------------------------------

TALK = [
    "The deploy is blocked on the database migration of the orders table.",
    "The index on the orders table takes twenty minutes to build on staging.",
    "Then let's build the index concurrently in a separate migration step.",
]


def test_a_models_summary_reaches_the_chat_only_if_grounded(fake: FakeModelServer) -> None:
    grounded = "alice says the deploy is blocked on the orders table migration; they build the index concurrently."
    invented = "alice and Mallory agreed to move the deploy to Friday at 5pm."
    fake.script = [reply(*(w + " " for w in grounded.split(" "))), reply(invented)]
    args = ("--backend", "openai", "--base-url", fake.url, "--model", "m")
    with bot_in_lobby(*args) as (alice, bot):
        for text in TALK:
            alice.say("lobby", text)
        alice.say("lobby", "@ai summary")
        assert from_bot(alice).text == grounded
        request = fake.requests[0]["messages"][-1]["content"]
        assert "in at most 120 characters" in request and "add nothing" in request
        alice.say("lobby", "@ai summary")
        fallback = from_bot(alice).text
        assert fallback.startswith("Last 3 messages in #lobby") and "Mallory" not in fallback
        bot.wait_for_line(
            r"the openai backend's summary was not grounded in the lines \('Mallory' is not in "
            r"the conversation"
        )
