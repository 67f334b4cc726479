"""What people and scripts see: `join` (terminal and pipe), `send`, and their rendering."""
