"""chatctl: a chat server, its clients, a load generator and a bot over one wire protocol."""

__version__ = "0.1.0"
