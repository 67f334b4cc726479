"""The client library as a state machine, against the real server, with real connection drops.

Random sequences of say / join / part / connection blinks (a TCP proxy cuts the connection;
the client reconnects by itself). Checked against a model: every message is acknowledged and
reaches an observer exactly once, and the client ends up in exactly the rooms it should be in.
"""

from __future__ import annotations

import itertools
import time

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatctl.client.connection import Backoff, Client, Outgoing
from chatctl.errors import ConnectFailed
from chatctl.protocol import HistoryEnd, Members, Message, RoomList
from tests.clients import WAIT, wait_for
from tests.proxy import Proxy
from tests.servers import running_server

ROOMS = ("r0", "r1", "r2")


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._server = running_server()
        self.addr = self._server.__enter__()
        self.proxy = Proxy(self.addr)
        self.alice = Client(
            "127.0.0.1",
            self.proxy.port,
            nick="alice",
            rooms=["r0"],
            reconnect=True,
            backoff=Backoff(base=0.02, cap=0.1),
        )
        self.alice.connect()
        self.bob = Client(*self.addr, nick="bob", rooms=ROOMS)
        self.bob.connect()
        for room in ROOMS:
            wait_for(self.bob, HistoryEnd, lambda e, r=room: e.room == r)  # type: ignore[misc]
        self.rooms = {"r0"}
        self.sent: list[Outgoing] = []
        self.blinks = 0
        self.ids = itertools.count()

    @rule(room=st.sampled_from(ROOMS), action=st.booleans())
    def say(self, room: str, action: bool) -> None:
        self.sent.append(self.alice.say(room, f"m{next(self.ids)}", action=action))

    @rule(room=st.sampled_from(ROOMS))
    def join(self, room: str) -> None:
        self.alice.join(room)
        # A room is one of alice's once the server confirms the join (after a reconnect, if
        # the connection is down).
        assert self.alice.wait_joined(room, WAIT) is True
        self.rooms.add(room)

    @precondition(lambda self: len(self.rooms) > 0)
    @rule(data=st.data())
    def part(self, data: st.DataObject) -> None:
        room = data.draw(st.sampled_from(sorted(self.rooms)))
        self.alice.part(room)
        self.rooms.discard(room)

    @precondition(lambda self: self.blinks < 3)
    @rule(half_open=st.booleans())
    def blink(self, half_open: bool) -> None:
        self.proxy.cut(half_open=half_open)
        self.blinks += 1

    @invariant()
    def rooms_match_the_model(self) -> None:
        assert set(self.alice.rooms) == self.rooms

    def _settle(self) -> None:
        for out in self.sent:
            ack = out.wait(WAIT)
            assert ack.seq >= 1
        texts = [out.request.text for out in self.sent]
        got: list[str] = []
        deadline = time.monotonic() + WAIT
        while len(got) < len(texts) and time.monotonic() < deadline:
            event = self.bob.next_event(0.1)
            if isinstance(event, Message) and event.sender == "alice":
                got.append(event.text)
        while (event := self.bob.next_event(0.05)) is not None:  # anything extra: duplicates
            if isinstance(event, Message) and event.sender == "alice":
                got.append(event.text)
        assert sorted(got) == sorted(texts)  # each exactly once
        self._barrier()
        for room in ROOMS:
            self.bob.who(room)
            members = wait_for(self.bob, Members, lambda m, r=room: m.room == r)  # type: ignore[misc]
            assert ("alice" in members.nicks) == (room in self.rooms), (room, members)

    def _barrier(self) -> None:
        """Wait until the server has handled everything alice sent (answers come in order)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.alice.connected:
                try:
                    self.alice.list_rooms()
                    wait_for(self.alice, RoomList, timeout=1.0)
                    return
                except (ConnectFailed, AssertionError):
                    pass  # the link died under us: the reconnect is under way
            self.alice.next_event(0.05)
        raise AssertionError("alice never came back")

    def teardown(self) -> None:
        try:
            self._settle()
        finally:
            self.alice.close()
            self.bob.close()
            self.proxy.close()
            self._server.__exit__(None, None, None)


ClientMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=12, deadline=None)
TestClientMachine = ClientMachine.TestCase
