"""The session state machine, driven from both ends against a model written out by hand."""

from __future__ import annotations

import pytest
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chatctl import protocol as p
from tests.strategies import any_event, events_of

CLIENT_REQUESTS = {
    p.Join,
    p.Part,
    p.Say,
    p.Tell,
    p.ChangeNick,
    p.Who,
    p.ListRooms,
    p.History,
    p.Register,
    p.Moderate,
}
SERVER_REPLIES = {
    p.Message,
    p.DirectMessage,
    p.Notice,
    p.Ack,
    p.Members,
    p.RoomList,
    p.Gap,
    p.HistoryEnd,
    p.Error,
}


def model_next(state: str, sender: str, kind: type[p.Event]) -> str | None:
    """The state after `sender` sends a `kind` frame in `state`, or None if forbidden."""
    if state == "closed":
        return None
    if kind is p.Bye:
        return "closed"
    if state == "start":
        return "handshake" if sender == "client" and kind is p.Hello else None
    if state == "handshake":
        if sender == "client" and (kind in CLIENT_REQUESTS or kind in (p.Ping, p.Pong)):
            return "handshake"  # pipelined after the Hello (§4.1)
        return "ready" if sender == "server" and kind is p.Welcome else None
    allowed = CLIENT_REQUESTS if sender == "client" else SERVER_REPLIES
    return "ready" if kind in allowed or kind in (p.Ping, p.Pong) else None


class Session(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ends = {"client": p.Connection(p.Role.CLIENT), "server": p.Connection(p.Role.SERVER)}
        self.model = "start"

    def _send(self, sender: str, event: p.Event) -> None:
        receiver = "server" if sender == "client" else "client"
        expected = model_next(self.model, sender, type(event))
        if expected is None:
            with pytest.raises(p.LocalProtocolError):
                self.ends[sender].send(event)
            return
        self.ends[receiver].receive_data(self.ends[sender].send(event))
        assert self.ends[receiver].next_event() == event
        assert self.ends[receiver].next_event() is p.NEED_DATA
        self.model = expected

    @rule(event=any_event)
    def client_sends(self, event: p.Event) -> None:
        self._send("client", event)

    @rule(event=any_event)
    def server_sends(self, event: p.Event) -> None:
        self._send("server", event)

    # Dedicated rules make the handshake common enough to reach READY in most runs.
    @rule(event=events_of(p.Hello))
    def client_says_hello(self, event: p.Event) -> None:
        self._send("client", event)

    @rule(event=events_of(p.Welcome))
    def server_welcomes(self, event: p.Event) -> None:
        self._send("server", event)

    @invariant()
    def both_ends_agree_with_the_model(self) -> None:
        assert self.ends["client"].state.value == self.model
        assert self.ends["server"].state.value == self.model


TestSession = Session.TestCase


def test_model_agrees_on_the_happy_path() -> None:
    """The model itself can fail: the normal session is start -> handshake -> ready -> closed."""
    assert model_next("start", "client", p.Hello) == "handshake"
    assert model_next("handshake", "server", p.Welcome) == "ready"
    assert model_next("ready", "client", p.Say) == "ready"
    assert model_next("ready", "client", p.Message) is None
    assert model_next("ready", "server", p.Bye) == "closed"
