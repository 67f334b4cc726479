"""`chatctl serve`: the event loop (loop.py) around the sans-IO chat rules (hub.py)."""
