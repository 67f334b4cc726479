"""The bot's settings and their defaults: the one source `chatctl bot`'s options, the runner
and the brain share. Light on purpose (no brain, no backend): the CLI reads these defaults
at start-up."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from chatctl.address import Address
from chatctl.protocol import DEFAULT_HOST, DEFAULT_PORT
from chatctl.server.config import DEFAULT_ROOM

REACTION_TIME = 1.5  # seconds: a trigger sooner than this after the bot spoke is machine speed


class BackendName(enum.StrEnum):
    offline = "offline"
    openai = "openai"
    local = "local"


class OnFailure(enum.StrEnum):
    notice = "notice"  # say so in the chat (at most once a minute per channel)
    silent = "silent"  # only the log line


@dataclass(frozen=True, kw_only=True)
class BrainSettings:
    """When the bot speaks (chatctl.bot.brain)."""

    nick: str = "ai"
    every_lines: int | None = None
    every_seconds: float | None = None
    context_messages: int = 30
    context_chars: int = 4000
    reply_rate: float = 12.0  # replies per minute; 0 means no limit
    burst: int = 3
    max_reply: int = 1500
    max_streak: int = 2  # the bot's messages in a row in a machine-speed exchange
    reaction_time: float = REACTION_TIME
    loop_window: float = 10.0
    queue_limit: int = 10  # questions waiting for the rate limit at most
    ignore: tuple[str, ...] = ()
    summary_default: int = 30


@dataclass(frozen=True, kw_only=True)
class BotConfig:
    """Everything `chatctl bot` takes; `brain` holds what decides when it speaks."""

    # The servers, tried in order (chatctl.client.Client fails over between them).
    servers: tuple[Address, ...] = (Address(DEFAULT_HOST, DEFAULT_PORT),)
    tls_ca: str | None = None  # the CA file to trust instead of the system's
    tls_fingerprint: str | None = None  # the certificate's SHA-256, pinned (client/trust.py)
    rooms: tuple[str, ...] = (DEFAULT_ROOM,)
    backend: BackendName = BackendName.offline
    base_url: str = "http://127.0.0.1:8080/v1"  # the openai backend's API root
    model: str | None = None  # a model name (openai) or a GGUF path (local)
    system: str | None = None  # the system prompt, or @FILE
    knowledge: Path | None = None  # the offline backend's knowledge file (None: the guide)
    on_failure: OnFailure = OnFailure.notice
    connect_timeout: float = 5.0
    reply_timeout: float = 30.0  # seconds for a whole reply, from the turn to its last frame
    account: str = ""  # the account to log in to; "" for a guest
    password: str = field(default="", repr=False)  # never shown in a repr or a log
    brain: BrainSettings = field(default_factory=BrainSettings)

    @property
    def host(self) -> str:
        """The first server's host."""
        return self.servers[0].host

    @property
    def port(self) -> int:
        """The first server's port."""
        return self.servers[0].port

    @property
    def tls(self) -> bool:
        """Whether any server is a tls:// one."""
        return any(address.tls for address in self.servers)
