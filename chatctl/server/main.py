"""`chatctl serve` in the main thread: the server until SIGINT or SIGTERM (a second signal
exits at once), and a failure of the server as one line for the CLI."""

from __future__ import annotations

import os
import signal
import traceback
from types import FrameType

from chatctl.errors import ChatctlError
from chatctl.server.config import ServerConfig
from chatctl.server.loop import Server


def serve(config: ServerConfig) -> int:
    """Run the server in this (main) thread until SIGINT or SIGTERM. Exit status 0."""
    server = Server(config)
    server.bind()
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        del frame
        if stopping:
            os._exit(128 + signum)  # a second signal: exit at once
        stopping = True
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except ChatctlError:
        raise
    except Exception as exc:  # the store failing (a full disk, say): log it all, exit in one line
        server.journal.error(
            "fatal", f"the server stopped: {exc}", traceback=traceback.format_exc()
        )
        raise ChatctlError(f"the server stopped on an internal error: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
