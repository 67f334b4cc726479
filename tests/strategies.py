"""Hypothesis strategies for protocol events, built from the frame classes themselves."""

from __future__ import annotations

import typing

import msgspec
from hypothesis import strategies as st

from chatctl import protocol as p

# Text as peers send it: any Unicode scalar value (hypothesis never generates surrogates).
texts = st.text(max_size=40)
ints = st.integers(min_value=0, max_value=p.MAX_INT)

_BY_TYPE: dict[object, st.SearchStrategy[typing.Any]] = {
    str: texts,
    int: ints,
    bool: st.booleans(),
    int | None: st.none() | ints,
    list[str]: st.lists(texts, max_size=5),
    dict[str, int]: st.dictionaries(texts, ints, max_size=5),
}


def events_of(cls: type[p.Event]) -> st.SearchStrategy[p.Event]:
    hints = typing.get_type_hints(cls)  # without Annotated: UInt reads as int
    fields = {f.name: _BY_TYPE[hints[f.name]] for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


ALL_FRAME_CLASSES = sorted(p.FRAME_TYPES.values(), key=lambda cls: cls.TYPE)
any_event = st.one_of([events_of(cls) for cls in ALL_FRAME_CLASSES])

# Events each side may send once the session is READY (Bye excluded: it ends the session).
PINGS: tuple[type[p.Event], ...] = (p.Ping, p.Pong)
client_ready_events = st.one_of([events_of(cls) for cls in (*p.CLIENT_EVENTS[1:], *PINGS)])
server_ready_events = st.one_of([events_of(cls) for cls in (*p.SERVER_EVENTS[1:], *PINGS)])
