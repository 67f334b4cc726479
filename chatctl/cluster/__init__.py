"""Talking to Redis from the server's event loop, for a cluster of nodes (docs/cluster.md):

- url.py: `redis://HOST:PORT[/DB]` as `--data` takes it;
- resp.py: the RESP2 codec and the pipeline that matches replies to commands (sans-IO);
- link.py: one non-blocking connection on the loop's selector, with reconnects;
- entries.py: what the nodes write to the shared log, and how it is read back (sans-IO);
- leases.py: which nodes are gone, from the log's own clock (sans-IO);
- snapshot.py: snapshots of the replicated state, so that the log is trimmed (sans-IO).

The engine that applies the log to the hub is server/replication.py.
"""
