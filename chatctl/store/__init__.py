"""Message history behind one interface (base.py): in memory, or durable in SQLite."""
