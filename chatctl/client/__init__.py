"""The client library that `join`, `send` and the bot are built on."""
