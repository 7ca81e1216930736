"""`fwsync daemon`: the reconciler beside dockerd.

Triggers only say *that* something may have changed; every reconcile re-reads the world:

    Docker events ─┐  (docker_events.py: classify, reconnect with backoff, re-list on connect)
    rules changes ─┤  (rules_watch.py: file watching + SIGHUP)
    drift ─────────┼─▶ Coalescer ─▶ Reconciler.reconcile() ─▶ make_plan ─▶ lock ─▶ apply
    retries ───────┘  (coalesce.py)   (loop.py)

service.py wires these together in one asyncio loop; notify.py speaks sd_notify, metrics.py
serves Prometheus metrics, state.py writes the small file `fwsync status` reads, logs.py makes
the one structured line per reconcile.
"""
