"""Room settings and who may do what in a room, sans-IO: owners, operators, private
(invite-only) rooms, invitations, bans and topics (docs/protocol.md §6.6).

An identity is what settings name: a logged-in session's account, or a guest's nick,
casefolded (`registry.account_key`). Since an account's nick is reserved for it, a guest can
never hold an account's name; a guest named in a list is matched by its nick alone, which is
as much as a guest can be known by (docs/security.md).

`RoomRules` keeps every room's settings in memory (loaded at start-up; rooms with settings
are bounded by the server's `total_rooms`) and writes each change through the registry
before it is announced. The hub asks it before a Join, Say, Who or History and for ListRooms,
and hands it each Moderate request.
"""

from __future__ import annotations

from chatctl.names import NICK_MAX, nick_problem, quote
from chatctl.protocol import MODERATE_ACTIONS, ErrorCode
from chatctl.store.registry import LIST_MAX, TOPIC_MAX, Registry, RoomSettings, account_key

# The actions only the owner may take; the others are open to operators too.
OWNER_ONLY = frozenset(("op", "deop"))
# Actions and the notice kind that announces them.
NOTICE_OF = {
    "topic": "topic",
    "private": "private",
    "public": "public",
    "invite": "invited",
    "uninvite": "uninvited",
    "kick": "kicked",
    "ban": "banned",
    "unban": "unbanned",
    "op": "op",
    "deop": "deop",
}
assert set(NOTICE_OF) == set(MODERATE_ACTIONS)


class Refusal(Exception):
    """A request the room's settings do not allow: `code` and a message for the Error."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.NOT_PERMITTED) -> None:
        super().__init__(message)
        self.code = code


class RoomRules:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.settings: dict[str, RoomSettings] = {s.room: s for s in registry.room_settings()}
        # Rooms where speaking or entering is checked at all: private, or with bans. A Say to
        # any other room pays one set lookup for this module.
        self.restricted: set[str] = {
            name for name, s in self.settings.items() if s.private or s.banned
        }

    # -- questions ---------------------------------------------------------------------------

    def entry_problem(self, room: str, identity: str, account: str) -> str | None:
        """Why `identity` may not enter (Join), or speak in, `room` it is not in; None if it
        may."""
        s = self.settings.get(room)
        if s is None:
            return None
        if identity in s.banned:
            return f"you are banned from #{room}"
        if s.private and not self._belongs(s, identity, account):
            return f"#{room} is private: members need an invitation"
        return None

    def may_look(self, room: str, identity: str, account: str) -> bool:
        """Whether a non-member may see the room's members, history or its name in a list."""
        s = self.settings.get(room)
        return s is None or not s.private or self._belongs(s, identity, account)

    def owns(self, room: str, account: str) -> bool:
        """Whether `account` ("" for a guest) owns `room`."""
        s = self.settings.get(room)
        return s is not None and _owned_by(s, account)

    @staticmethod
    def _belongs(s: RoomSettings, identity: str, account: str) -> bool:
        return identity in s.invited or identity in s.ops or _owned_by(s, account)

    # -- changes -----------------------------------------------------------------------------

    def created(self, room: str, owner: str) -> None:
        """A logged-in account created `room`: it owns it."""
        if room not in self.settings:
            self._save(RoomSettings(room=room, owner=owner))

    def moderate(
        self, room: str, account: str, action: str, target: str, text: str
    ) -> RoomSettings:
        """Apply one Moderate request by `account` ("" for a guest) and return the new
        settings (saved). Raises Refusal. Kicks change no settings: the hub removes the
        member; they are checked here like the rest."""
        new = self.check(room, account, action, target, text)
        if new is not self.settings[room]:
            self._save(new)
        return new

    def check(self, room: str, account: str, action: str, target: str, text: str) -> RoomSettings:
        """The settings `moderate` would make, without saving them; raises Refusal. (A node
        of a cluster refuses at once what the settings refuse now; it is checked again when
        the log brings it back.)"""
        if action not in NOTICE_OF:
            raise Refusal(
                f"{quote(action)} is not a moderation action ({', '.join(MODERATE_ACTIONS)})",
                ErrorCode.INVALID_REQUEST,
            )
        s = self.settings.get(room)
        if s is None or not s.owner:
            raise Refusal(f"nobody owns #{room}: it cannot be moderated")
        key = account_key(account) if account else ""
        is_owner = _owned_by(s, account)
        if not (is_owner or (key and key in s.ops)):
            raise Refusal(f"only the owner and operators of #{room} may do that")
        if action in OWNER_ONLY and not is_owner:
            raise Refusal(f"only the owner of #{room} names operators")
        who = account_key(target)
        if action in ("invite", "uninvite", "kick", "ban", "unban", "op", "deop"):
            if not who:
                raise Refusal(f"{action} needs a target", ErrorCode.INVALID_REQUEST)
            # Targets are nicks or accounts (which are nick-shaped): anything else could
            # never match, and the lists must not hold big strings.
            problem = nick_problem(target)
            if problem is not None:
                raise Refusal(f"{quote(target[:NICK_MAX])}: {problem}", ErrorCode.INVALID_REQUEST)
        if action in ("kick", "ban") and who == account_key(s.owner):
            raise Refusal(f"the owner of #{room} cannot be kicked or banned")
        if action in ("op", "deop") and self.registry.account(target) is None:
            raise Refusal(f"operators are accounts, and {quote(target)} is none")
        new = s
        if action == "topic":
            if len(text) > TOPIC_MAX:
                raise Refusal(
                    f"a topic has at most {TOPIC_MAX} characters", ErrorCode.INVALID_REQUEST
                )
            new = s.replace(topic=text)
        elif action in ("private", "public"):
            new = s.replace(private=action == "private")
        elif action == "invite":
            new = s.replace(invited=_added(s.invited, who))
        elif action == "uninvite":
            new = s.replace(invited=s.invited - {who})
        elif action == "ban":
            new = s.replace(banned=_added(s.banned, who), invited=s.invited - {who})
        elif action == "unban":
            new = s.replace(banned=s.banned - {who})
        elif action == "op":
            new = s.replace(ops=_added(s.ops, who))
        elif action == "deop":
            new = s.replace(ops=s.ops - {who})
        return new

    def _save(self, settings: RoomSettings) -> None:
        self.registry.save_room(settings)
        self.settings[settings.room] = settings
        if settings.private or settings.banned:
            self.restricted.add(settings.room)
        else:
            self.restricted.discard(settings.room)


def _owned_by(s: RoomSettings, account: str) -> bool:
    return bool(account) and account_key(account) == account_key(s.owner)


def _added(names: frozenset[str], name: str) -> frozenset[str]:
    if name not in names and len(names) >= LIST_MAX:
        raise Refusal(f"a room's list holds at most {LIST_MAX} names", ErrorCode.INVALID_REQUEST)
    return names | {name}
