"""A run's parameters and their defaults: the one source `chatctl bench`'s options and the
plan share. Light on purpose (plain data): the CLI reads these defaults at start-up."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Scenario(enum.StrEnum):
    fanout = "fanout"
    room = "room"
    rooms = "rooms"
    connect = "connect"


@dataclass(frozen=True, kw_only=True)
class Params:
    scenario: Scenario = Scenario.fanout
    publishers: int = 1
    subscribers: int = 10
    clients: int = 10
    rooms: int = 4
    messages: int = 10_000  # per publisher, after warm-up; 0: run for `duration`
    duration: float = 10.0
    size: int = 100
    rate: float = 0.0  # per publisher; 0: as fast as the window allows
    warmup: float = 0.0
    workers: int = 2
    room: str | None = None  # --room: the one room (or the stem of the rooms) every run uses

    def with_value(self, name: str, value: int | float) -> Params:
        return replace(self, **{name: type(getattr(self, name))(value)})


SWEEPABLE = ("publishers", "subscribers", "clients", "rooms", "size", "rate", "workers", "messages")
