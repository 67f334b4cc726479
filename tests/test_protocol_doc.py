"""docs/protocol.md cannot drift: every example frame in it is what the code produces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatctl import protocol as p

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
BLOCK = re.compile(r"```frame\n(.*?)\n```", re.DOTALL)


def hexdump(data: bytes) -> str:
    """xxd-style: offset, 16 bytes in two groups of 8, then the printable characters."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {left:<23}  {right:<23}  |{text}|")
    return "\n".join(lines)


def parse_hexdump(dump: str) -> bytes:
    out = bytearray()
    for line in dump.splitlines():
        hex_part = line[10:].split("|", 1)[0]
        out += bytes.fromhex(hex_part)
    return bytes(out)


def examples() -> list[tuple[str, str]]:
    found = []
    for block in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        expression, _, dump = block.partition("\n")
        found.append((expression, dump))
    return found


def test_the_document_has_examples_of_every_frame_type() -> None:
    shown = {type(eval(expression, vars(p))) for expression, _ in examples()}
    assert shown == set(p.FRAME_TYPES.values())


@pytest.mark.parametrize(("expression", "dump"), examples(), ids=[e for e, _ in examples()])
def test_example_bytes_match_the_code(expression: str, dump: str) -> None:
    event = eval(expression, vars(p))
    assert parse_hexdump(dump) == p.encode(event)
    assert dump == hexdump(p.encode(event))


def test_hexdump_parser_reads_what_hexdump_writes() -> None:
    data = bytes(range(40))
    assert parse_hexdump(hexdump(data)) == data
