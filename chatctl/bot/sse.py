"""A small server-sent-events reader, sans-IO: bytes in, events out (the WHATWG rules we need).

Lines end in LF, CRLF or CR; a blank line dispatches the event; `data:` lines join with LF;
lines starting with ":" are comments; one optional space after the colon is dropped. Fields
other than `data`, `event` and `id` are ignored. A line longer than `max_line` bytes is an
error, so a hostile or broken server cannot make the reader buffer without bound.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str = ""


class SSEError(ValueError):
    pass


class SSEReader:
    def __init__(self, *, max_line: int = 1024 * 1024) -> None:
        self.max_line = max_line
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._pending_cr = False  # a CR ended the last chunk: an LF that follows is the same EOL

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes from the stream; return every event they completed."""
        if not chunk:
            return []
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cr = self._buffer.find(b"\r")
            lf = self._buffer.find(b"\n")
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = self._buffer[:end]
            skip = 1
            if end == cr:
                if end + 1 < len(self._buffer):
                    skip = 2 if self._buffer[end + 1 : end + 2] == b"\n" else 1
                else:
                    self._pending_cr = True
            self._buffer = self._buffer[end + skip :]
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        if len(self._buffer) > self.max_line:
            raise SSEError(f"event stream line longer than {self.max_line} bytes")
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(
                data="\n".join(self._data), event=self._event or "message", id=self._id
            )
            self._data = []
            self._event = ""
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
