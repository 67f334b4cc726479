"""The naming rules of docs/protocol.md §6.1, in one place: the server enforces them, clients
use them to show and compare names exactly as the server will stamp them.

Nicks: 1-32 ASCII characters of letters, digits and _-[]{}\\|^`, not starting with a digit
or '-'. Rooms: 1-64 of [A-Za-z0-9_.-] after one leading '#' is removed, compared lower-cased.
ASCII only, so that look-alike letters cannot impersonate anyone.
"""

from __future__ import annotations

NICK_MAX = 32
ROOM_MAX = 64
REASON_MAX = 200  # reasons are echoed to whole rooms: keep them short
MSG_ID_MAX = 64

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NICK_CHARS = _ALNUM | frozenset("_-[]{}\\|^`")
_ROOM_CHARS = _ALNUM | frozenset("_-.")


def nick_problem(nick: str) -> str | None:
    """Why `nick` is not a valid nick, or None when it is."""
    if not nick:
        return "a nick may not be empty"
    if len(nick) > NICK_MAX:
        return f"a nick has at most {NICK_MAX} characters"
    for ch in nick:
        if ch not in _NICK_CHARS:
            return f"a nick may not contain {ch!r} (ASCII letters, digits and _-[]{{}}\\|^` only)"
    if nick[0] == "-" or nick[0].isdigit():
        return "a nick may not start with a digit or '-'"
    return None


def normalise_room(name: str) -> str | None:
    """The canonical form of a room name ('#Lobby' -> 'lobby'), or None when it is invalid
    (so '#' and '' are None)."""
    room = name[1:] if name.startswith("#") else name
    if not room or len(room) > ROOM_MAX or not _ROOM_CHARS.issuperset(room):
        return None
    return room.lower()


def room_problem(name: str) -> str | None:
    """Why `name` is not a room name, in the words of the server's INVALID_ROOM error, or
    None for a valid one."""
    if normalise_room(name) is not None:
        return None
    return f"{quote(name)} is not a valid room name (1-{ROOM_MAX} ASCII letters, digits or _-.)"


def room_key(name: str) -> str:
    """What a client compares and shows: the canonical name the server will stamp on the
    room's frames, or, for a name the server will refuse, the name as typed (so that the
    server's error names what the user wrote)."""
    return normalise_room(name) or name


def clip_reason(reason: str) -> str:
    """A reason cut to REASON_MAX characters (with an ellipsis when cut)."""
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


def quote(name: str) -> str:
    """A client-supplied name in an error message: quoted, and short whatever was sent."""
    return repr(name if len(name) <= ROOM_MAX + 1 else name[:ROOM_MAX] + "…")
