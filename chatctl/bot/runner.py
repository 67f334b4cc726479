"""The bot's IO: the chat connection (chatctl.client), a worker thread for the backend, logs.

The main thread reads chat events and feeds them to the brain, and ticks the brain's timers.
Turns the brain returns go to a small bounded queue; one worker thread runs them through the
backend and streams the reply into the chat as the text arrives (manners.Framer decides when
a frame is worth sending), so a slow model never stops the bot from reading (and answering
the server's pings). A notice (the brain holding back, saying so) needs no backend: the main
thread sends it at once. When the queue is full a turn is dropped with a log line, and a
question's asker is told, once a minute per channel: the bot would rather say "ask again"
than answer minutes late.

Each reply has a deadline (--reply-timeout), whatever the backend. The backend's generator
runs in a thread of its own (a _Pump), because a model busy in C code (llama.cpp's decode)
cannot be interrupted: the worker waits for its pieces with a timeout, gives up at the
deadline (what was produced so far goes out ending in "…", or, if nothing was, the failure
notice or silence), and the pump stops the generator at its next piece.
"""

from __future__ import annotations

import enum
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from chatctl.bot.backend import Backend, BackendError
from chatctl.bot.brain import Brain, ChatLine, Skip, Turn, TurnKind
from chatctl.bot.config import BotConfig, OnFailure
from chatctl.bot.factory import make_backend
from chatctl.bot.manners import Framer, where
from chatctl.client import Client, Closed, Disconnected, Reconnected, Refused
from chatctl.client.trust import client_trust
from chatctl.errors import ChatctlError
from chatctl.protocol import DEFAULT_MAX_TEXT, DirectMessage, Error, Message, Notice

log = logging.getLogger("chatctl.bot")

QUEUE_LIMIT = 4  # turns waiting for the backend; more are dropped, never delivered late
NOTICE_INTERVAL = 60.0  # at most one failure notice per channel per minute


def load_system(system: str | None) -> str | None:
    """--system TEXT, or --system @FILE to read the prompt from a file."""
    if system is None or not system.startswith("@"):
        return system
    path = Path(system[1:])
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatctlError(f"cannot read the system prompt {path}: {exc}") from None


class _Signal(enum.Enum):
    WAKE = "wake"  # nothing new from the backend within the wait
    ABORT = "abort"  # the bot is stopping


class _Pump:
    """A backend's reply generator, run in a thread of its own so the worker can wait for its
    pieces with a deadline. After `stop` the generator is closed at its next piece (closing it
    from another thread is not allowed while it runs)."""

    def __init__(self, stream: Iterator[str]) -> None:
        self._stream = stream
        self._items: queue.SimpleQueue[str | BackendError | _Signal | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatctl-bot-backend", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for piece in self._stream:
                if self._stop.is_set():
                    break
                self._items.put(piece)
        except BackendError as exc:
            self._items.put(exc)
        except Exception as exc:  # a bug in a backend must not kill the bot
            log.exception("the backend crashed")
            self._items.put(BackendError(f"the backend crashed: {exc!r}"))
        finally:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()  # a model stops generating; an HTTP response is closed
            self._items.put(None)

    def get(self, timeout: float) -> str | BackendError | _Signal | None:
        """The next piece, a BackendError, None at the end, or WAKE after `timeout` s."""
        try:
            return self._items.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return _Signal.WAKE

    def abort(self) -> None:
        """Wake the waiting worker at once (the bot is stopping)."""
        self._stop.set()
        self._items.put(_Signal.ABORT)

    def stop(self) -> None:
        self._stop.set()


class Bot:
    def __init__(self, config: BotConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.brain = Brain(config.brain, now=time.monotonic())
        self._brain_lock = threading.Lock()  # the brain is sans-IO, not thread-safe
        self._turns: queue.Queue[Turn | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._noticed: dict[str, float] = {}
        self._pump: _Pump | None = None  # the reply being produced, if any
        self.client = Client(
            config.servers,
            nick=config.brain.nick,
            rooms=config.rooms,
            connect_timeout=config.connect_timeout,
            reconnect=True,
            tls=client_trust(config.tls, config.tls_ca, config.tls_fingerprint),
            account=config.account,
            password=config.password,
        )
        self.replies = 0  # replies sent, for the log and tests

    @property
    def max_text(self) -> int:
        limit = self.client.limits.get("max_text", DEFAULT_MAX_TEXT)
        return max(16, limit)

    # -- the main thread: chat events and timers -------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        welcome = self.client.connect()
        with self._brain_lock:
            self.brain.rename(welcome.nick)
        log.info(
            "connected to %s as %s%s (backend %s), rooms: %s",
            self.client.addr,
            welcome.nick,
            f", logged in as {welcome.account}" if welcome.account else "",
            self.backend.name,
            ", ".join(self.config.rooms),
        )
        worker = threading.Thread(target=self._work, name="chatctl-bot-worker", daemon=True)
        worker.start()
        try:
            while not stop.is_set():
                with self._brain_lock:
                    deadline = self.brain.next_deadline()
                wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                event = self.client.next_event(timeout=max(0.0, wait))
                if isinstance(event, Closed):
                    if event.error is not None:
                        raise event.error
                    return 0
                if event is not None:
                    self._on_event(event)
                with self._brain_lock:
                    turns = self.brain.tick(time.monotonic())
                    skips = self.brain.drain_skips()
                self._queue(turns, skips)
            return 0
        finally:
            self._turns.queue.clear()
            self._turns.put(None)
            pump = self._pump
            if pump is not None:
                pump.abort()
            self.client.close("bot stopping")
            worker.join(2.0)
            self.backend.close()

    def _on_event(self, event: object) -> None:
        now = time.monotonic()
        line: ChatLine | None = None
        if isinstance(event, Message):
            line = ChatLine(
                sender=event.sender,
                text=event.text,
                ts=now,
                room=event.room,
                action=event.action,
                history=event.history,
                wall=event.ts / 1000,
            )
        elif isinstance(event, DirectMessage):
            line = ChatLine(
                sender=event.sender,
                text=event.text,
                ts=now,
                action=event.action,
                wall=event.ts / 1000,
            )
        elif isinstance(event, Notice) and event.kind == "renamed":
            with self._brain_lock:
                self.brain.rename(self.client.nick)
        elif isinstance(event, Reconnected):
            log.info("reconnected to %s after %d attempt(s)", self.client.addr, event.attempts)
            with self._brain_lock:
                self.brain.rename(event.welcome.nick)
        elif isinstance(event, Disconnected):
            log.warning("disconnected: %s; reconnecting", event.reason)
        elif isinstance(event, Refused):
            log.warning("the server refused a reply: %s", event.error.message)
        elif isinstance(event, Error):
            log.warning("server error %d: %s", event.code, event.message)
        if line is not None:
            with self._brain_lock:
                turns = self.brain.observe(line, now)
                skips = self.brain.drain_skips()
            self._queue(turns, skips)

    def _queue(self, turns: list[Turn], skips: list[Skip]) -> None:
        for skip in skips:
            log.info("%s", skip.message)
        for turn in turns:
            if turn.text is not None:
                self._say(turn, turn.text)
                continue
            if turn.waited:
                log.info(
                    "answering %s in %s after %.1f s in the queue",
                    turn.prompt.asker,
                    where(turn.channel),
                    turn.waited,
                )
            try:
                self._turns.put_nowait(turn)
            except queue.Full:
                log.warning(
                    "too busy: dropped a %s turn for %s (%d replies waiting for the backend)",
                    turn.prompt.kind,
                    where(turn.channel),
                    QUEUE_LIMIT,
                )
                if turn.prompt.kind is not TurnKind.CHIME:
                    self._notice_once(
                        turn, "too many questions at once; please ask again in a minute."
                    )

    def _say(self, turn: Turn, text: str) -> None:
        """Send a notice of the bot's own, and remember it as said."""
        self._send(turn, text)
        with self._brain_lock:
            self.brain.spoke(turn, text, time.monotonic())
        log.info("said in %s: %s", where(turn.channel), text)

    def _notice_once(self, turn: Turn, text: str) -> None:
        now = time.monotonic()
        key = f"busy {turn.channel}"
        if now - self._noticed.get(key, float("-inf")) < NOTICE_INTERVAL:
            return
        self._noticed[key] = now
        to = f"{turn.prompt.asker}: " if turn.room is not None and turn.prompt.asker else ""
        self._say(turn, to + text)

    # -- the worker thread: backend calls and replies -------------------------------------------

    def _work(self) -> None:
        while (turn := self._turns.get()) is not None:
            try:
                self._answer(turn)
            except Exception as exc:  # a bug in one reply must not kill the bot
                log.exception("reply for %s failed: %r", turn.channel, exc)

    def _send(self, turn: Turn, text: str) -> None:
        if turn.room is not None:
            self.client.say(turn.room, text)
        elif turn.to is not None:
            self.client.tell(turn.to, text)

    def _answer(self, turn: Turn) -> None:
        started = time.monotonic()
        deadline = started + self.config.reply_timeout
        first: float | None = None
        pieces = 0
        sent: list[str] = []
        names: set[str] = set()
        if self.backend.strip_speaker:
            names = {turn.prompt.bot_nick, turn.prompt.asker}
            names |= {line.sender for line in turn.prompt.context}
        framer = Framer(
            max_chars=turn.prompt.max_chars, max_bytes=self.max_text, names=names, now=started
        )
        pump = self._pump = _Pump(self.backend.complete(turn.prompt))
        timed_out = False
        # Halfway to the deadline, a log line says a reply is slow while it still runs.
        slow_at: float | None = started + self.config.reply_timeout / 2
        try:
            while True:
                wake = min(t for t in (deadline, framer.idle_at(), slow_at) if t is not None)
                item = pump.get(wake - time.monotonic())
                now = time.monotonic()
                if item is _Signal.ABORT:
                    return
                if item is None:
                    break
                if isinstance(item, BackendError):
                    self._failed(turn, str(item), sent_any=bool(sent))
                    return
                if item is _Signal.WAKE:
                    if now >= deadline:
                        timed_out = True
                        break
                    if slow_at is not None and now >= slow_at:
                        slow_at = None
                        log.info(
                            "backend %s still working on a reply for %s after %.1f s "
                            "(%d piece(s) so far; reply timeout %g s)",
                            self.backend.name,
                            turn.channel,
                            now - started,
                            pieces,
                            self.config.reply_timeout,
                        )
                    frames = framer.idle(now)
                else:
                    pieces += 1
                    frames = framer.feed(item, now)
                for frame in frames:
                    if first is None:
                        first = time.monotonic() - started
                    self._send(turn, frame)
                    sent.append(frame)
                if framer.full:
                    break
        finally:
            pump.stop()
            self._pump = None
            # A backend that can stop mid-computation (the local model) does so now rather
            # than at its next piece.
            cancel = getattr(self.backend, "cancel", None)
            if cancel is not None:
                cancel()
        if timed_out and not sent and not framer.pending.strip():
            self._failed(turn, f"no reply within {self.config.reply_timeout:g} s", sent_any=False)
            return
        for frame in framer.finish(cut=timed_out):
            if first is None:
                first = time.monotonic() - started
            self._send(turn, frame)
            sent.append(frame)
        if not sent:
            self._failed(turn, "the backend returned an empty reply", sent_any=False)
            return
        if timed_out:
            log.warning(
                "backend %s too slow for %s: reply cut at the %g s reply timeout",
                self.backend.name,
                turn.channel,
                self.config.reply_timeout,
            )
        self.replies += 1
        text = " ".join(sent)
        with self._brain_lock:
            self.brain.spoke(turn, text, time.monotonic())
        log.info(
            "replied (%s) in %s: %d frame(s), %d chars, %d chunk(s) streamed, first frame "
            "after %.2f s, done in %.2f s",
            turn.prompt.kind,
            turn.channel,
            len(sent),
            len(text),
            pieces,
            first if first is not None else 0.0,
            time.monotonic() - started,
        )

    def _failed(self, turn: Turn, reason: str, *, sent_any: bool) -> None:
        log.warning("backend %s failed for %s: %s", self.backend.name, turn.channel, reason)
        if self.config.on_failure is not OnFailure.notice or sent_any:
            return
        now = time.monotonic()
        if now - self._noticed.get(turn.channel, float("-inf")) < NOTICE_INTERVAL:
            return
        self._noticed[turn.channel] = now
        self._send(turn, f"(sorry, my {self.backend.name} backend is not answering right now)")


def _stop_on_sigterm(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s chatctl bot: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def run_bot(config: BotConfig, stop: threading.Event | None = None) -> int:
    """`chatctl bot`: connect, take part, and keep going until SIGINT/SIGTERM (or `stop`)."""
    _setup_logging()
    started = time.monotonic()
    engine = make_backend(config, system=load_system(config.system))
    log.info("backend %s ready in %.2f s", engine.name, time.monotonic() - started)
    bot = Bot(config, engine)
    stop = stop or threading.Event()
    _stop_on_sigterm(stop)
    return bot.run(stop)
