"""Encode and decode cost per frame, for docs/protocol.md.

Compares the JSON bodies chatctl uses with a hand-packed binary layout of the same Message
frame (length-prefixed strings via struct), to justify the body encoding with a measurement;
also the server's fast encoders and a whole Say/Ack exchange through two Connections.

    python benchmarks/protocol_cost.py
"""

from __future__ import annotations

import struct
import timeit

from chatctl import protocol as p

TEXT = "x" * 100
MESSAGE = p.Message(room="lobby", seq=123456, ts=1764000000000, sender="alice", text=TEXT)
SAY = p.Say(msg_id="c1-000042", room="lobby", text=TEXT)
ACK = p.Ack(msg_id="c1-000042", ts=1764000000000, recipients=1, room="lobby", seq=123456)


def per_call_us(fn: object, number: int = 200_000) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))  # type: ignore[arg-type]
    return best / number * 1e6


def ready_pair() -> tuple[p.Connection, p.Connection]:
    client, server = p.Connection(p.Role.CLIENT), p.Connection(p.Role.SERVER)
    server.receive_data(client.send(p.Hello(version=1, nick="a")))
    server.next_event()
    client.receive_data(
        server.send(p.Welcome(protocol=1, server="s", version="v", nick="a", token="t"))
    )
    client.next_event()
    return client, server


def main() -> None:
    say_frame = p.encode(SAY)
    message_frame = p.encode(MESSAGE)
    client, server = ready_pair()
    batch = say_frame * 100

    def decode_batch() -> None:
        server.receive_data(batch)
        for _ in range(100):
            server.next_event()

    def round_trip() -> None:
        server.receive_data(client.send(SAY))
        server.next_event()
        client.receive_data(server.send(ACK))
        client.next_event()

    # The binary alternative: fixed ints, then u16-length-prefixed UTF-8 strings.
    fixed = struct.Struct("!QQB")

    def bin_encode() -> bytes:
        parts = [fixed.pack(MESSAGE.seq, MESSAGE.ts, 0)]
        for s in (MESSAGE.room, MESSAGE.sender, MESSAGE.text):
            b = s.encode()
            parts.append(len(b).to_bytes(2, "big") + b)
        return b"".join(parts)

    packed = bin_encode()

    def bin_decode() -> tuple[object, ...]:
        seq, ts, flags = fixed.unpack_from(packed)
        pos = fixed.size
        out = []
        for _ in range(3):
            n = int.from_bytes(packed[pos : pos + 2], "big")
            out.append(packed[pos + 2 : pos + 2 + n].decode())
            pos += 2 + n
        return (seq, ts, flags, *out)

    rows = [
        (
            "encode Message (JSON, 100-byte text)",
            per_call_us(lambda: p.encode(MESSAGE)),
            len(message_frame),
        ),
        (
            "decode Message body (JSON)",
            per_call_us(lambda: p.decode_body(p.Message.TYPE, message_frame[8:])),
            len(message_frame),
        ),
        (
            "decode Say via Connection.next_event",
            per_call_us(decode_batch, 2000) / 100,
            len(say_frame),
        ),
        ("encode Ack (JSON)", per_call_us(lambda: p.encode(ACK)), len(p.encode(ACK))),
        (
            "encode_message (the server's fast path)",
            per_call_us(
                lambda: p.encode_message("lobby", 123456, 1764000000000, "alice", TEXT, False)
            ),
            len(message_frame),
        ),
        (
            "encode_ack (the server's fast path)",
            per_call_us(lambda: p.encode_ack("c1-000042", 1764000000000, 1, "lobby", 123456)),
            len(p.encode(ACK)),
        ),
        (
            "Connection round trip: Say sent and read, Ack sent and read",
            per_call_us(round_trip, 50_000),
            len(say_frame) + len(p.encode(ACK)),
        ),
        ("encode Message (binary alternative)", per_call_us(bin_encode), len(packed) + 8),
        ("decode Message (binary alternative)", per_call_us(bin_decode), len(packed) + 8),
    ]
    print(f"{'operation':62} {'µs/frame':>9} {'bytes':>6}")
    for name, us, size in rows:
        print(f"{name:62} {us:9.2f} {size:6d}")


if __name__ == "__main__":
    main()
