"""The bot's manners, sans-IO: a reply-rate token bucket and fitting text into chat frames."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

ELLIPSIS = "…"
SPEAKER_PREFIX_WINDOW = 40  # characters of a reply held back to look for a copied "nick:"


class TokenBucket:
    """`rate` tokens per second up to `capacity`; a rate of 0 means no limit.

    Time is passed in (seconds, any monotonic origin) so tests drive it without sleeping.
    """

    def __init__(self, *, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self._tokens = self.capacity
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means: not now."""
        if self.rate <= 0:
            return True
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def tokens(self, now: float) -> float:
        if self.rate <= 0:
            return self.capacity
        self._refill(now)
        return self._tokens


_SPACES = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Collapse all whitespace, newlines included: `join` in a pipe prints one event a line."""
    return _SPACES.sub(" ", text).strip()


def clip(text: str, max_chars: int) -> str:
    """Cut `text` to at most `max_chars` characters, at a word boundary when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text[: max(1, max_chars - len(ELLIPSIS))]
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def _utf8_prefix(text: str, max_bytes: int) -> int:
    """Length in characters of the longest prefix of `text` that fits in `max_bytes` of UTF-8."""
    size = 0
    for i, ch in enumerate(text):
        size += len(ch.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            return i
    return len(text)


_SENTENCE_END = re.compile(r"[.!?;:]\s")


def split_frames(text: str, max_bytes: int) -> list[str]:
    """Split `text` into pieces of at most `max_bytes` UTF-8 bytes each (the server's max_text).

    Prefers a sentence end, then a space, and cuts inside a word only when it must. Joining the
    pieces with single spaces gives back the text with its whitespace collapsed.
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must leave room for one character")
    rest = one_line(text)
    pieces: list[str] = []
    while rest:
        fit = _utf8_prefix(rest, max_bytes)
        if fit >= len(rest):
            pieces.append(rest)
            break
        head = rest[:fit]
        cut = fit
        # The last sentence end in the second half of the window, else the last space.
        window = head + rest[fit : fit + 1]
        sentence = max((m.start() for m in _SENTENCE_END.finditer(window)), default=-1)
        if sentence >= fit // 2:
            cut = sentence + 1
        else:
            space = head.rfind(" ")
            if space > 0:
                cut = space
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [p for p in pieces if p]


def strip_speaker(text: str, names: Iterable[str]) -> str:
    """Drop a leading "nick:" that a model copied from the transcript format, when the nick
    is one of `names` (the bot's own, or someone in the conversation)."""
    colon = text.find(":", 0, SPEAKER_PREFIX_WINDOW)
    if colon >= 0 and text[:colon].strip().lstrip("@").casefold() in {n.casefold() for n in names}:
        return text[colon + 1 :].lstrip()
    return text


def stream_frames(
    stream: Iterable[str], *, max_chars: int, max_bytes: int, names: Iterable[str] = ()
) -> Iterator[str]:
    """Chat frames from a stream of text pieces, as soon as each frame is full.

    The reply stops at `max_chars` characters (then ends in an ellipsis, and the stream is
    closed so a model stops generating); each frame holds at most `max_bytes` of UTF-8; a
    leading "nick:" naming one of `names` is dropped.
    """
    known = {n for n in names if n}
    pending = ""
    total = 0
    truncated = False
    head_checked = not known
    try:
        for chunk in stream:
            room_left = max_chars - total
            truncated = len(chunk) > room_left
            piece = chunk[:room_left]
            pending += piece
            total += len(piece)
            if not head_checked:
                if len(pending) < SPEAKER_PREFIX_WINDOW and not truncated:
                    continue  # the reply may begin with a "nick:" to drop
                pending = strip_speaker(pending, known)
                head_checked = True
            frames = split_frames(pending, max_bytes) if pending.strip() else []
            yield from frames[:-1]
            if frames:
                # Keep the last, partial frame; and the space it ended in, if any.
                pending = frames[-1] + (" " if pending[-1:].isspace() else "")
            if truncated:
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if not head_checked:
        pending = strip_speaker(pending, known)
    tail = one_line(pending)
    if truncated and tail:
        tail += ELLIPSIS
    if tail:
        yield from split_frames(tail, max_bytes)
