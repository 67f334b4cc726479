"""`chatctl bot`: an AI participant in the chat (offline by default).

config.py holds its settings and their defaults (light: the CLI reads them at start-up, and
this file imports nothing); brain.py decides when to speak (sans-IO); backend.py is the
interface the offline, openai and local backends implement, and factory.py builds the one a
config names; runner.run_bot connects the brain to the chat through chatctl.client.
"""
