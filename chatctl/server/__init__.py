"""`chatctl serve`. Its modules, each importing only those listed after it:

- loop.py: the event loop and the server's life cycle (`Server`, `serve()`);
- peer.py: one connection's state and output queue (with a room's shared Batch);
- admission.py: who may connect and how much they may send (limits, refusals, rate meters);
- replication.py: a node of a cluster, the shared Redis log applied to the hub;
- answers.py: a connection's answers in the order of its requests (a cluster node's Acks);
- hub.py: the chat rules, sans-IO;
- transport.py: bytes in and out of a connection (plain TCP today), and the listeners;
- config.py, log.py: the settings and the server's log.

The package imports protocol, names, ratelimit, store, cluster and errors; none of those
imports it.
"""
