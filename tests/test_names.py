"""chatctl/names.py against models of its rules: docs/protocol.md §6.1 as regular expressions,
the token shape and the reason limit written out plainly."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from chatctl.names import (
    REASON_MAX,
    ROOM_MAX,
    clip_reason,
    nick_problem,
    normalise_room,
    room_key,
)

# docs/protocol.md §6.1, written as regular expressions.
NICK_MODEL = re.compile(r"[A-Za-z_\[\]{}\\|^`][A-Za-z0-9_\-\[\]{}\\|^`]{0,31}")
ROOM_MODEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# Names near the rules' edges: allowed characters, their ASCII neighbours, look-alikes, '#'
# (allowed once, in front), and lengths around the limits.
NEAR = "aZz09_-.[]{}|^`\\#@! é\u0130\u212a"
ROOMISH = st.text(alphabet=st.sampled_from(NEAR), max_size=ROOM_MAX + 3) | st.text(max_size=70)
NICKISH = st.text(alphabet=st.sampled_from(NEAR), max_size=36) | st.text(max_size=40)


def model_room(name: str) -> str | None:
    bare = name[1:] if name[:1] == "#" else name
    return bare.lower() if ROOM_MODEL.fullmatch(bare) else None


@given(ROOMISH)
def test_property_room_normalisation_matches_the_model(name: str) -> None:
    assert normalise_room(name) == model_room(name)


@given(ROOMISH)
def test_property_room_normalisation_is_idempotent(name: str) -> None:
    room = normalise_room(name)
    if room is not None:
        assert normalise_room(room) == room
        assert normalise_room("#" + room) == room
        assert normalise_room(room.upper()) == room


def test_a_bare_hash_and_the_empty_name_are_no_rooms() -> None:
    assert normalise_room("#") is None
    assert normalise_room("") is None
    assert normalise_room("##dev") is None  # one '#' is removed, not all
    assert normalise_room("#" + "x" * ROOM_MAX) == "x" * ROOM_MAX
    assert normalise_room("x" * (ROOM_MAX + 1)) is None


@given(ROOMISH)
def test_property_room_key_is_the_canonical_name_or_the_name_as_typed(name: str) -> None:
    canonical = model_room(name)
    assert room_key(name) == (name if canonical is None else canonical)


@given(NICKISH)
def test_property_nick_rule_matches_the_model(nick: str) -> None:
    problem = nick_problem(nick)
    assert (problem is None) == bool(NICK_MODEL.fullmatch(nick))
    assert problem is None or problem.startswith("a nick ")


@given(st.text(max_size=2 * REASON_MAX))
def test_property_a_clipped_reason_fits_and_keeps_its_start(reason: str) -> None:
    clipped = clip_reason(reason)
    assert len(clipped) <= REASON_MAX
    if len(reason) <= REASON_MAX:
        assert clipped == reason
    else:
        assert clipped.endswith("…") and reason.startswith(clipped[:-1])
