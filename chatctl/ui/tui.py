"""`chatctl join` on a terminal: windows, as irssi and weechat users know them.

A full-screen prompt_toolkit application: a title line (the window's room and topic, or its
partner), the shown window's lines, a status line (the window, the activity list
`[Act: 3(2),4(1)!]`, your nick, the connection), and the input line at the bottom. Window 1
is the status window; each room and each direct-message partner has its own, with its own
lines (windows.py: the model, sans-IO). Alt-1..9/Alt-0, Alt-Left/Right, Ctrl-P/N and
/window switch between them without any request to the server: switching never re-joins.

Nothing is ever printed over the input line: every line is drawn into the layout, laid out
for the current width (screen.py: word wrap, a hanging indent, marked continuation lines),
and redrawn on a resize. The connection lives in the client library's reader thread, which
adds lines to the windows; commands run one at a time on a thread of their own (a /join
waits for the server's answer), so typing, switching and redrawing never wait, and a
reconnect never touches the windows or what is being typed.

This is the only module that imports prompt_toolkit.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition, has_completions
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    HSplit,
    Layout,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput, PasswordProcessor
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

from chatctl.client import Backoff, Client, default_nick
from chatctl.errors import Rejected
from chatctl.protocol import ErrorCode
from chatctl.ui.chatscreen import ChatScreen
from chatctl.ui.commands import ALIASES, COMMANDS, WINDOW_ACTIONS
from chatctl.ui.logs import ChatLogs
from chatctl.ui.render import DEFAULT_TIMESTAMP, ColourDepth, colour_depth
from chatctl.ui.screen import mark_for

if TYPE_CHECKING:
    import ssl

    from chatctl.address import Address
    from chatctl.client.trust import ServerTrust

PASTE_CONFIRM_LINES = 5  # a paste of more lines than this asks before it is sent
_WAIT_ASK = 0.2  # how often a question's waiter looks whether the screen is gone

# Arguments completed as rooms, nicks, commands or window actions, by command (and alias).
_ROOM_ARGS = {"join", "part", "who", "topic", "private", "public"}
_NICK_ARGS = {"msg", "query", "whois", "ignore", "unignore", "kick", "ban", "unban"}
_NICK_ARGS |= {"op", "deop", "invite", "uninvite"}

STYLE = Style.from_dict(
    {
        "title": "reverse",
        "status": "reverse",
        "status.alert": "noreverse bg:ansired fg:ansiwhite bold",
        "status.active": "bold",
        "act.event": "",
        "act.message": "bold",
        "act.mention": "bold fg:ansibrightmagenta",
        "timestamp": "fg:ansibrightblack",
        "system": "italic fg:ansibrightblack",
        "day": "bold",
        "error": "fg:ansired",
        "mention": "bold fg:ansiyellow",
        "history": "fg:ansibrightblack",
        "marker": "fg:ansibrightblack",
        "prompt.where": "bold",
        "question": "bold",
    }
)
_DEPTHS = {
    "none": ColorDepth.DEPTH_1_BIT,
    "basic": ColorDepth.DEPTH_4_BIT,
    "256": ColorDepth.DEPTH_8_BIT,
    "truecolor": ColorDepth.DEPTH_24_BIT,
}


class _Question:
    """A question the command thread asks through the input line (a password)."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.answer: str | None = None  # None: not answered (yet), or given up
        self.done = threading.Event()


class ChatUI:
    """The terminal's part: the input line (with its drafts, history and completion), the
    paste confirmation, questions without echo, and the application that draws `screen`."""

    def __init__(self, screen: ChatScreen, depth: ColourDepth) -> None:
        self.screen = screen
        self.client = screen.client
        self.depth = depth
        self.confirming: str | None = None  # a long paste waiting for yes or no
        self.question: _Question | None = None
        self.terminated = False  # SIGTERM: quit cleanly
        self.app: Application[None] | None = None
        self.input = Buffer(
            multiline=True,
            history=InMemoryHistory(),
            completer=ChatCompleter(screen),
            complete_while_typing=False,
            accept_handler=self._accept,
        )
        self.secret = Buffer(multiline=False, accept_handler=self._answer)
        screen.ask = self.ask
        screen.redraw = self.redraw
        screen.on_close = self.exit_app

    def question_line(self) -> StyleAndTextTuples:
        lines = (self.confirming or "").count("\n") + 1
        return [("class:question", f"Send these {lines} lines as one message? [y/N] ")]

    def secret_prompt(self) -> StyleAndTextTuples:
        question = self.question
        return [("class:question", question.prompt if question is not None else "")]

    def redraw(self) -> None:
        app = self.app
        if app is not None and app.is_running:
            app.invalidate()

    def exit_app(self) -> None:
        """From any thread: close the screen (the client closed, /quit, SIGTERM)."""
        app = self.app
        if app is not None and app.is_running and app.loop is not None:
            app.loop.call_soon_threadsafe(self._exit)

    def _exit(self) -> None:
        app = self.app
        if app is not None and app.is_running:
            with contextlib.suppress(Exception):  # already on its way out
                app.exit()

    # -- input, on the screen's thread ----------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        text = buffer.text
        if not text.strip():
            return False
        if text.count("\n") + 1 > PASTE_CONFIRM_LINES:
            self.confirming = text  # asked on the question line; the text stays
            return True
        self.screen.submit(text)
        return False

    def confirm(self, yes: bool) -> None:
        text, self.confirming = self.confirming, None
        if text is None:
            return
        if yes:
            self.input.reset()
            self.screen.submit(text)
        else:
            self.screen.show(["paste not sent: it is still there to edit"])

    def _answer(self, buffer: Buffer) -> bool:
        question, self.question = self.question, None
        if question is not None:
            question.answer = buffer.text
            question.done.set()
        self._focus_input()
        return False

    def cancel_question(self) -> None:
        question, self.question = self.question, None
        self.secret.reset()
        if question is not None:
            question.done.set()
        self._focus_input()

    def _focus_input(self) -> None:
        app = self.app
        if app is not None:
            with contextlib.suppress(ValueError):
                app.layout.focus(self.input)

    def ask(self, prompt: str) -> str | None:
        """From the command thread: ask on the input line, without echo; None if the user
        gives up (Ctrl-C) or the screen goes."""
        app = self.app
        if app is None or app.loop is None or not app.is_running:
            return None
        question = _Question(prompt)

        def start() -> None:
            self.question = question
            self.secret.reset()
            app.layout.focus(self.secret)
            app.invalidate()

        app.loop.call_soon_threadsafe(start)
        while not question.done.wait(_WAIT_ASK):
            if self.app is None or not self.app.is_running:
                return None
        return question.answer

    def quit(self) -> None:
        self.screen.quit_reason = ""
        self._exit()


class MessagesControl(UIControl):
    """The shown window's lines, bottom-aligned, laid out for the width it is given."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.height = 24

    def create_content(self, width: int, height: int) -> UIContent:
        self.height = height
        lines = cast(list[StyleAndTextTuples], self.screen.visible_lines(width, height))
        return UIContent(get_line=lambda i: lines[i], line_count=len(lines), show_cursor=False)

    def is_focusable(self) -> bool:
        return False


class ChatCompleter(Completer):
    """Tab completes commands and aliases after "/", and then their arguments: rooms, nicks,
    command names (/help) or window actions; nicks elsewhere (`bo<Tab>` at the start of a
    line gives `bob: `)."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        if before.startswith("/") and " " not in before:
            stem = before[1:].lower()
            for name in sorted({*COMMANDS, *ALIASES}):
                if name.startswith(stem):
                    yield Completion("/" + name + " ", start_position=-len(before))
            return
        command = ""
        if before.startswith("/"):
            typed = before.split(" ", 1)[0][1:].lower()
            command = ALIASES.get(typed, typed).split()[0]
            if len(before.split()) > 2 or (len(before.split()) == 2 and not word):
                command = ""  # past the first argument: nicks, as in text
        if command == "help":
            for name in sorted({*COMMANDS, *ALIASES}):
                if name.startswith(word.lower()):
                    yield Completion(name, start_position=-len(word))
            return
        if command == "window":
            for action in (a for a in WINDOW_ACTIONS if a != "goto"):
                if action.startswith(word.lower()):
                    yield Completion(action, start_position=-len(word))
            return
        if command in _ROOM_ARGS:
            stem = word.removeprefix("#")
            with self.screen.lock:  # the reader thread adds rooms as it learns them
                rooms = sorted(self.screen.known_rooms | set(self.screen.client.rooms))
            for room in rooms:
                if room.startswith(stem):
                    yield Completion("#" + room, start_position=-len(word))
            return
        yield from self._nicks(before, word, after_command=command in _NICK_ARGS)

    def _nicks(self, before: str, word: str, *, after_command: bool) -> Iterator[Completion]:
        stem = word.removeprefix("@").casefold()
        at_start = before == word
        with self.screen.lock:
            nicks = sorted(self.screen.nicks.values(), key=str.casefold)
        for nick in nicks:
            if nick.casefold().startswith(stem) and nick != self.screen.client.nick:
                plain = after_command or word.startswith("@") or not at_start
                suffix = "" if plain else ": "
                prefix = "@" if word.startswith("@") else ""
                yield Completion(prefix + nick + suffix, start_position=-len(word))


def _key_bindings(ui: ChatUI, messages: MessagesControl) -> KeyBindings:
    kb = KeyBindings()
    screen = ui.screen
    asking = Condition(lambda: ui.question is not None)
    confirming = Condition(lambda: ui.confirming is not None)
    typing = ~asking & ~confirming

    for digit in "1234567890":

        @kb.add("escape", digit, eager=True)
        def _go(event: KeyPressEvent, number: int = int(digit) or 10) -> None:
            screen.go(number)

    @kb.add("escape", "right", eager=True)
    @kb.add("c-n", eager=True)
    def _next(event: KeyPressEvent) -> None:
        screen.next_window(1)

    @kb.add("escape", "left", eager=True)
    @kb.add("c-p", eager=True)
    def _prev(event: KeyPressEvent) -> None:
        screen.next_window(-1)

    @kb.add("pageup", eager=True)
    def _up(event: KeyPressEvent) -> None:
        screen.scroll(1, messages.height)

    @kb.add("pagedown", eager=True)
    def _down(event: KeyPressEvent) -> None:
        screen.scroll(-1, messages.height)

    @kb.add("enter", filter=typing & ~has_completions, eager=True)
    @kb.add("c-j", filter=typing & ~has_completions, eager=True)
    def _enter(event: KeyPressEvent) -> None:
        ui.input.validate_and_handle()

    @kb.add("enter", filter=typing & has_completions, eager=True)
    def _take_completion(event: KeyPressEvent) -> None:
        ui.input.complete_state = None  # the completion is in the line: send it as it is
        ui.input.validate_and_handle()

    @kb.add("tab", filter=typing)
    def _complete(event: KeyPressEvent) -> None:
        generate_completions(event)

    @kb.add("s-tab", filter=typing)
    def _complete_back(event: KeyPressEvent) -> None:
        if ui.input.complete_state:
            ui.input.complete_previous()

    @kb.add("c-c", filter=typing, eager=True)
    def _quit(event: KeyPressEvent) -> None:
        ui.quit()

    @kb.add("c-d", filter=typing, eager=True)
    def _eof(event: KeyPressEvent) -> None:
        if ui.input.text:
            ui.input.delete()
        else:
            ui.quit()

    @kb.add("y", filter=confirming, eager=True)
    @kb.add("Y", filter=confirming, eager=True)
    def _yes(event: KeyPressEvent) -> None:
        ui.confirm(True)

    @kb.add("<any>", filter=confirming, eager=True)
    @kb.add("c-c", filter=confirming, eager=True)
    def _no(event: KeyPressEvent) -> None:
        ui.confirm(False)

    @kb.add("c-c", filter=asking, eager=True)
    @kb.add("c-d", filter=asking, eager=True)
    def _give_up(event: KeyPressEvent) -> None:
        ui.cancel_question()

    return kb


def _formatted(lines: Callable[[], list[tuple[str, str]]]) -> Callable[[], StyleAndTextTuples]:
    """chatscreen's (style, text) pairs as prompt_toolkit's type (a list of a wider union:
    prompt_toolkit 3.0.53 no longer takes any callable where it wants formatted text)."""
    return lambda: cast(StyleAndTextTuples, lines())


def build_app(ui: ChatUI) -> Application[None]:
    screen = ui.screen
    messages = MessagesControl(screen)
    asking = Condition(lambda: ui.question is not None)
    confirming = Condition(lambda: ui.confirming is not None)
    input_window = Window(
        BufferControl(ui.input, input_processors=[BeforeInput(_formatted(screen.prompt_message))]),
        height=Dimension(min=1, max=6),
        dont_extend_height=True,
        wrap_lines=True,
    )
    body = HSplit(
        [
            Window(
                FormattedTextControl(_formatted(screen.title_line)), height=1, style="class:title"
            ),
            Window(messages, wrap_lines=False),
            Window(
                FormattedTextControl(_formatted(screen.status_line)), height=1, style="class:status"
            ),
            ConditionalContainer(input_window, filter=~asking & ~confirming),
            ConditionalContainer(
                Window(FormattedTextControl(ui.question_line), height=1),
                filter=confirming & ~asking,
            ),
            ConditionalContainer(
                Window(
                    BufferControl(
                        ui.secret,
                        input_processors=[
                            PasswordProcessor(char=""),
                            BeforeInput(ui.secret_prompt),
                        ],
                    ),
                    height=1,
                ),
                filter=asking,
            ),
        ]
    )
    root = FloatContainer(
        body,
        floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))],
    )
    return Application(
        layout=Layout(root, focused_element=input_window),
        key_bindings=_key_bindings(ui, messages),
        style=STYLE,
        full_screen=True,
        color_depth=_DEPTHS[ui.depth],
        enable_page_navigation_bindings=False,
        mouse_support=False,
    )


class _Sink(io.TextIOBase):
    """stdout and stderr while the screen is up: whatever a library prints becomes a line in
    the status window instead of a mess over the screen."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                with self.screen.lock:
                    self.screen.windows.add(
                        self.screen.windows.status, self.screen.make.error(line)
                    )
        self.screen.redraw()
        return len(text)


def _ask_nick(default: str) -> str | None:
    try:
        answer = PromptSession[str]().prompt(f"nick [{default}]: ")
    except (KeyboardInterrupt, EOFError):
        return None
    return answer.strip() or default


def _connect(client: Client, asked: bool) -> bool:
    """Connect; when the nick was asked for and is refused, ask again. False: the user quit."""
    for _ in range(3):
        try:
            client.connect()
            return True
        except Rejected as exc:
            if not asked or exc.code != ErrorCode.INVALID_NICK:
                raise
            print(f"chatctl: {exc}", file=sys.stderr)
            nick = _ask_nick(default_nick())
            if nick is None:
                return False
            client.nick = nick
    client.connect()
    return True


def run_tui(
    *,
    addresses: Sequence[Address],
    nick: str | None,
    rooms: list[str],
    history: int | None,
    connect_timeout: float,
    tls: ssl.SSLContext | ServerTrust | None = None,
    account: str = "",
    password: str = "",
    timestamp: str = DEFAULT_TIMESTAMP,
    log_dir: Path | str | None = None,
) -> int:
    logs = ChatLogs(log_dir) if log_dir is not None else None
    if logs is not None:
        logs.check()
    if nick is None and account:
        nick = account  # an account's nick is its name: nothing to ask
    asked = nick is None
    if nick is None:
        nick = _ask_nick(default_nick())
        if nick is None:
            return 0
    client = Client(
        addresses,
        nick=nick,
        rooms=rooms,
        history=history,
        connect_timeout=connect_timeout,
        tls=tls,
        account=account,
        password=password,
        reconnect=True,
        backoff=Backoff(cap=5.0),
    )
    depth = colour_depth()
    screen = ChatScreen(
        client,
        rooms,
        depth=depth,
        timestamp=timestamp,
        logs=logs,
        mark=mark_for(getattr(sys.stdout, "encoding", None)),
    )
    ui = ChatUI(screen, depth)
    client.on_event = screen.on_event
    if not _connect(client, asked):
        return 0
    ui.app = build_app(ui)

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        ui.terminated = True
        ui.exit_app()  # the screen closes, and the client says Bye: a clean quit

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        _chat(ui, client)
    finally:
        signal.signal(signal.SIGTERM, previous)
    closed = screen.closed
    if closed is not None and closed.error is not None:
        print(f"chatctl: {closed.error}", file=sys.stderr)
        return int(closed.error.exit_code)
    return 0


def _chat(ui: ChatUI, client: Client) -> None:
    """The session until the user quits (or SIGTERM) or the client closes; then Bye."""
    screen = ui.screen
    with screen.lock:
        screen.greet()
    screen.start()
    app = ui.app
    assert app is not None
    sink = _Sink(screen)
    try:
        if screen.closed is None and not ui.terminated:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                app.run()
    finally:
        ui.cancel_question()
        screen.stop()
        client.close(screen.quit_reason or "")


__all__ = ["PASTE_CONFIRM_LINES", "ChatCompleter", "ChatUI", "build_app", "run_tui"]
