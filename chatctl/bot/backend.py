"""The one small interface every bot backend implements, and the chat prompt the LLM ones share.

A backend turns a Prompt into text, streamed as pieces. It raises BackendError for anything
that went wrong on its side (down, slow, garbage); the runner turns that into a short notice
or silence, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from chatctl.bot.brain import Prompt, TurnKind
from chatctl.errors import ChatctlError

DEFAULT_SYSTEM = (
    "You are {nick}, a friendly participant in a text chat room. Lines of the conversation "
    'are given as "nick: text". Answer briefly, in plain text on one line, without Markdown, '
    "in at most {max_chars} characters. If you do not know, say so."
)


class BackendError(ChatctlError):
    """The backend could not produce a reply. The message is one line, fit for a log."""


class Backend(Protocol):
    name: str
    # Models copy the transcript's "nick: text" format; the runner drops such a prefix from
    # their replies. The offline backend addresses the asker by name on purpose.
    strip_speaker: bool

    def complete(self, prompt: Prompt) -> Iterator[str]:
        """Yield the reply in pieces as they are produced; raise BackendError on failure."""
        ...

    def close(self) -> None: ...

    # Optional: `cancel()` stops the reply being produced at once, from another thread (the
    # runner calls it when it gives up on a reply); without it a reply stops at its next piece.


def system_text(system: str | None, prompt: Prompt) -> str:
    template = system if system else DEFAULT_SYSTEM
    try:
        return template.format(nick=prompt.bot_nick, max_chars=prompt.max_chars)
    except (KeyError, IndexError, ValueError):
        return template  # a user's prompt with stray braces is used as written


def _speaker(line_sender: str, text: str, action: bool) -> str:
    return f"* {line_sender} {text}" if action else f"{line_sender}: {text}"


def chat_messages(prompt: Prompt, system: str | None) -> list[dict[str, str]]:
    """The OpenAI-style message list for a prompt: system, the conversation, the request."""
    messages = [{"role": "system", "content": system_text(system, prompt)}]
    transcript = "\n".join(_speaker(ln.sender, ln.text, ln.action) for ln in prompt.context)
    if prompt.kind is TurnKind.SUMMARY:
        messages.append(
            {
                "role": "user",
                "content": "Summarise this chat conversation in at most "
                f"{prompt.max_chars} characters: the topics, what was decided, questions "
                "still open, and who said what, in the order it was said. Name people as "
                "the lines do. Use only names, numbers and facts that appear in the lines; "
                f"add nothing.\n{transcript or '(no messages)'}",
            }
        )
        return messages
    for line in prompt.context:
        if line.sender.casefold() == prompt.bot_nick.casefold():
            messages.append({"role": "assistant", "content": line.text})
        else:
            messages.append(
                {"role": "user", "content": _speaker(line.sender, line.text, line.action)}
            )
    if prompt.kind is TurnKind.CHIME:
        messages.append(
            {
                "role": "user",
                "content": "(Add one short, useful remark to the conversation above.)",
            }
        )
    else:
        messages.append({"role": "user", "content": f"{prompt.asker}: {prompt.question}"})
    return messages
