"""The msgspec codec against the codec it replaced: the same bytes out, the same events in.

`_Model` below is the body codec of chatctl before msgspec (json plus a Python check per
field, over dataclass fields then), kept here unchanged but for reading the fields of a
Struct. The properties hold `protocol.encode` and `protocol.decode_body` to it over
arbitrary events, with nasty text (control characters, DEL, U+2028/2029, quotes,
backslashes, astral characters, lone surrogates), values of the wrong type, and bodies with
unknown fields. Where the two codecs knowingly differ, the strategies stay away and the
examples at the end pin the difference down.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatctl import protocol as p
from tests.strategies import ALL_FRAME_CLASSES

# --- The model: the old codec -----------------------------------------------------------------


def _is_str(v: object) -> bool:
    return type(v) is str


def _is_int(v: object) -> bool:
    return isinstance(v, int) and type(v) is not bool and 0 <= v <= p.MAX_INT


def _is_bool(v: object) -> bool:
    return type(v) is bool


def _is_opt_int(v: object) -> bool:
    return v is None or _is_int(v)


def _is_str_list(v: object) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_int_dict(v: object) -> bool:
    return type(v) is dict and all(_is_int(x) for x in v.values())


_CHECKS: dict[object, tuple[str, Callable[[object], bool]]] = {
    str: ("a string", _is_str),
    int: ("an integer from 0 to 2**63-1", _is_int),
    bool: ("true or false", _is_bool),
    int | None: ("an integer or null", _is_opt_int),
    list[str]: ("a list of strings", _is_str_list),
    dict[str, int]: ("an object of integers", _is_int_dict),
}
_MISSING = object()
_SURROGATE = re.compile("[\ud800-\udfff]")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.JSONDecoder().decode

# (name, what, check, default, factory) per field, in field order
_Spec = tuple[str, str, Callable[[object], bool], object, Callable[[], object] | None]


def _specs(cls: type[p.Event]) -> tuple[_Spec, ...]:
    hints = typing.get_type_hints(cls)  # Annotated stripped: the plain types of before
    out: list[_Spec] = []
    for f in msgspec.structs.fields(cls):
        what, check = _CHECKS[hints[f.name]]
        factory = None if f.default_factory is msgspec.NODEFAULT else f.default_factory
        if f.default is not msgspec.NODEFAULT:
            default: object = f.default
        elif factory is not None:
            default = factory()
        else:
            default = _MISSING
        out.append((f.name, what, check, default, factory))
    return tuple(out)


_SPECS = {cls: _specs(cls) for cls in p.FRAME_TYPES.values()}


def _has_surrogate(value: object) -> bool:
    if type(value) is str:
        return _SURROGATE.search(value) is not None
    if type(value) is list:
        return any(_has_surrogate(x) for x in value)
    if type(value) is dict:
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def model_encode(event: p.Event) -> bytes:
    specs = _SPECS[type(event)]
    body: dict[str, Any] = {}
    for name, what, check, default, _factory in specs:
        value = getattr(event, name)
        if value == default and type(value) is type(default):
            continue
        if not check(value):
            raise p.LocalProtocolError(f"{type(event).__name__}.{name} must be {what}")
        body[name] = value
    try:
        data = _dumps(body).encode("utf-8")
    except UnicodeEncodeError:
        raise p.LocalProtocolError(
            f"{type(event).__name__} has text that is not valid Unicode"
        ) from None
    return p.HEADER.pack(p.MAGIC, event.TYPE, 0, len(data)) + data


def model_decode_body(frame_type: int, body: bytes) -> p.Event:
    cls = p.FRAME_TYPES[frame_type]
    try:
        text = body.decode("utf-8")
        obj = _loads(text)
    except UnicodeDecodeError:
        raise p.RemoteProtocolError(f"{cls.__name__} body is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise p.RemoteProtocolError(f"{cls.__name__} body is not valid JSON") from None
    if type(obj) is not dict:
        raise p.RemoteProtocolError(f"{cls.__name__} body is not a JSON object")
    kwargs: dict[str, Any] = {}
    for name, what, check, default, factory in _SPECS[cls]:
        value = obj.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise p.RemoteProtocolError(f"{cls.__name__} lacks the field {name!r}")
            value = default if factory is None else factory()
        elif not check(value):
            raise p.RemoteProtocolError(f"{cls.__name__}.{name} must be {what}")
        kwargs[name] = value
    if "\\u" in text and any(_has_surrogate(v) for v in kwargs.values()):
        raise p.RemoteProtocolError(f"{cls.__name__} has text that is not valid Unicode")
    return cls(**kwargs)


def outcome(fn: Callable[[], object]) -> tuple[str, object]:
    """What `fn` returns, or the type and message of the protocol error it raises."""
    try:
        return ("ok", fn())
    except p.ProtocolError as exc:
        return (type(exc).__name__, str(exc))


# --- Strategies -------------------------------------------------------------------------------

# Characters that JSON encoders get wrong: every escape, DEL, the JavaScript line separators, a
# BOM, non-characters and astral characters; then any Unicode scalar value.
NASTY_CHARS = st.sampled_from(
    [
        *(chr(c) for c in range(0x20)),
        *'"\\/\x7f\x80\x9f\xa0\xad',
        "\u2028",
        "\u2029",
        "\ufeff",
        "\ufffe",
        "\uffff",
        "\U0001f600",
        "\U0010ffff",
        "é",
        "<",
    ]
) | st.characters(exclude_categories=["Cs"])
nasty_text = st.text(NASTY_CHARS, max_size=30)
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
# Text that may hold a lone surrogate, which is not Unicode text and may not be sent.
unsendable_text = st.builds(lambda a, s, b: a + s + b, nasty_text, SURROGATES, nasty_text)
ints = st.integers(min_value=0, max_value=p.MAX_INT)
edge_ints = st.sampled_from([0, 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1]) | ints

_VALID: dict[object, st.SearchStrategy[Any]] = {
    str: nasty_text,
    int: edge_ints,
    bool: st.booleans(),
    int | None: st.none() | edge_ints,
    list[str]: st.lists(nasty_text, max_size=4),
    dict[str, int]: st.dictionaries(nasty_text, edge_ints, max_size=4),
}
# Values of a field's wrong type or out of its range, as Python objects, among them some that
# msgspec would encode as something else (bytes as base64, a tuple or a set as an array).
# (Not subclasses of str, int, list or dict, which the old codec refused by type: msgspec
# sends what they are equal to, as the peer would read them.)
wrong_values = st.sampled_from(
    [-1, 2**63, 2**64, True, False, 1.0, 0.5, float("nan"), None, "7", [1], {"a": -1}]
) | st.sampled_from([b"x", ("a",), {"a"}, frozenset(), (), object(), 1j])
_INVALID: dict[object, st.SearchStrategy[Any]] = {
    str: wrong_values.filter(lambda v: type(v) is not str) | unsendable_text,
    int: wrong_values,
    bool: wrong_values.filter(lambda v: type(v) is not bool) | st.sampled_from([0, 1]),
    int | None: wrong_values.filter(lambda v: v is not None),
    list[str]: wrong_values | st.lists(unsendable_text, min_size=1, max_size=2),
    dict[str, int]: wrong_values | st.dictionaries(unsendable_text, ints, min_size=1, max_size=2),
}


def nasty_events_of(cls: type[p.Event]) -> st.SearchStrategy[p.Event]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _VALID[hints[f.name]] for f in msgspec.structs.fields(cls)})


any_nasty_event = st.one_of([nasty_events_of(cls) for cls in ALL_FRAME_CLASSES])


@st.composite
def broken_events(draw: st.DrawFn) -> p.Event:
    """An event with one to all of its fields wrong (the rest valid)."""
    cls = draw(st.sampled_from([c for c in ALL_FRAME_CLASSES if msgspec.structs.fields(c)]))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in msgspec.structs.fields(cls)]
    wrong = draw(st.sets(st.sampled_from(names), min_size=1))
    kwargs = {
        name: draw(_INVALID[hints[name]] if name in wrong else _VALID[hints[name]])
        for name in names
    }
    return cls(**kwargs)


# JSON values for the fields of a body: right or wrong type, as the peer may send them; lone
# surrogates reach the body as `\ud800` escapes (json.dumps with ensure_ascii).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
    max_leaves=8,
)
field_values = json_values | unsendable_text | st.lists(unsendable_text, max_size=2)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    """A frame type and a body for it: its own fields, some missing, some wrong, unknown ones
    beside them, in any order, with or without escaped non-ASCII."""
    cls = draw(st.sampled_from(ALL_FRAME_CLASSES))
    hints = typing.get_type_hints(cls)
    obj: dict[str, Any] = {}
    for f in msgspec.structs.fields(cls):
        choice = draw(st.sampled_from(["valid", "valid", "missing", "wrong"]))
        if choice == "valid":
            obj[f.name] = draw(_VALID[hints[f.name]])
        elif choice == "wrong":
            obj[f.name] = draw(field_values)
    # Unknown fields are ignored by both codecs, with two known exceptions (the examples below).
    unknown = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    obj.update({f"x-{key}": value for key, value in unknown.items()})
    items = list(obj.items())
    order = draw(st.permutations(range(len(items))))
    ordered = dict(items[i] for i in order)
    ascii_only = draw(st.booleans())
    text = json.dumps(ordered, ensure_ascii=ascii_only, separators=(",", ":"))
    try:
        return cls.TYPE, text.encode("utf-8")
    except UnicodeEncodeError:
        return cls.TYPE, json.dumps(ordered, separators=(",", ":")).encode()


# --- Properties -------------------------------------------------------------------------------


@given(any_nasty_event)
@example(p.Say(msg_id="\x00\x1f\x7f", room="\u2028\u2029", text='"\\/\b\f\n\r\t\U0001f600'))
@example(p.Bye(code=p.ErrorCode.NORMAL))  # an IntEnum equal to the default is still sent
@example(p.Bye(code=0))
@example(p.Error(code=p.ErrorCode.NOT_IN_ROOM, message="é"))
@example(p.Welcome(protocol=1, server="", version="", nick="", token="", limits={"a": 0}))
def test_property_encode_writes_the_old_codecs_bytes(event: p.Event) -> None:
    assert p.encode(event) == model_encode(event)


@given(any_nasty_event)
def test_property_the_old_codec_reads_what_encode_writes(event: p.Event) -> None:
    data = p.encode(event)
    assert model_decode_body(data[2], data[8:]) == event == p.decode_body(data[2], data[8:])


@given(broken_events())
@example(p.Ping(token=-1))
@example(p.Say(msg_id="1", room="r", text="x", action=0))  # type: ignore[arg-type]
@example(p.Who(room="\ud800"))
@example(p.Members(room="r", nicks=["a", 1]))  # type: ignore[list-item]
@example(p.RoomList(rooms={"a": -1}))
def test_property_encode_refuses_what_the_old_codec_refused(event: p.Event) -> None:
    new, old = outcome(lambda: p.encode(event)), outcome(lambda: model_encode(event))
    assert new[0] == old[0] == "LocalProtocolError"
    if not _has_surrogate(msgspec.structs.asdict(event)):
        assert new == old  # a surrogate beside a wrong type: either message is right


@given(bodies())
@example((p.Ping.TYPE, b'{"token":NaN}'))
@example((p.Who.TYPE, b'{"room":"\\ud800"}'))
@example((p.Who.TYPE, b'{"room":"\\udc00\\ud800"}'))
@example((p.Who.TYPE, b'{"room":"\xed\xa0\x80"}'))
@example((p.Who.TYPE, b'{"room":"a","x":"\xff"}'))
@example((p.Members.TYPE, b'{"room":"a","nicks":["\\ud83d\\ude00"]}'))
@example((p.Members.TYPE, b'{"nicks":[1],"room":2}'))
@example((p.RoomList.TYPE, b'{"rooms":{"\\ud800":1}}'))
@example((p.Ping.TYPE, b'{"token":' + b"9" * 5000 + b"}"))
@example((p.Ping.TYPE, b'{"token":-0}'))
@example((p.Ping.TYPE, b'{"token":1E2}'))
@example((p.Ping.TYPE, b' {"token" : 1 } '))
@example((p.Ping.TYPE, b"[" * 100_000 + b"]" * 100_000))
@example((p.Who.TYPE, b'{"room":"a","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
def test_property_decode_agrees_with_the_old_codec(case: tuple[int, bytes]) -> None:
    frame_type, body = case
    new = outcome(lambda: p.decode_body(frame_type, body))
    old = outcome(lambda: model_decode_body(frame_type, body))
    assert new == old


# --- Where the codecs knowingly differ: unknown fields that Python's json module reads and
# msgspec does not, or the other way round. Each is about a field nobody reads.


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        # JSON has no NaN or Infinity; Python's json module reads them anyway.
        (b'{"room":"a","x":NaN}', "Who body is not valid JSON"),
        (b'{"room":"a","x":-Infinity}', "Who body is not valid JSON"),
        # A lone surrogate is not text, in an unknown field too.
        (b'{"room":"a","x":"\\ud800"}', "Who has text that is not valid Unicode"),
        (b'{"room":"a","x":{"\\udfff":1}}', "Who has text that is not valid Unicode"),
        # A repeated key is checked each time it comes (json keeps the last, unchecked).
        (b'{"room":1,"room":"a"}', "Who body is invalid: Expected `str`, got `int`"),
    ],
)
def test_msgspec_refuses_more_in_unknown_fields(body: bytes, needle: str) -> None:
    assert outcome(lambda: model_decode_body(p.Who.TYPE, body))[0] == "ok"
    with pytest.raises(p.RemoteProtocolError, match=re.escape(needle)):
        p.decode_body(p.Who.TYPE, body)


def test_msgspec_skips_long_numbers_in_unknown_fields() -> None:
    # Python caps int parsing at 4300 digits (quadratic); msgspec skips a number it need not
    # read in linear time. In a field that is read, both refuse it as before.
    body = b'{"room":"a","x":' + b"9" * 5000 + b"}"
    assert p.decode_body(p.Who.TYPE, body) == p.Who(room="a")
    assert outcome(lambda: model_decode_body(p.Who.TYPE, body)) == (
        "RemoteProtocolError",
        "Who body is not valid JSON",
    )


def test_every_frame_class_is_a_frozen_keyword_only_struct_that_omits_defaults() -> None:
    classes: list[type[p.Event]] = [*ALL_FRAME_CLASSES, p.ConnectionClosed]
    for cls in classes:
        assert issubclass(cls, msgspec.Struct)
        config = cls.__struct_config__
        assert config.frozen and config.omit_defaults and config.tag is None
        positional = [f.name for f in msgspec.structs.fields(cls) if f.required] or ["x"]
        with pytest.raises(TypeError):
            cls(*positional)  # keyword-only
