"""The supervisor: keeps the desired state (config.toml, edits) true in the observed graph.

Its rooms: `reconcile` (pure: desired and observed in, actions out), `executor` (actions through a Backend),
`loop` (the daemon's event loop), `session` (one reconciler per user session: lock and hold) and `bluetooth`
(Connect() for absent members). Import the room you need; this package imports nothing by itself.
"""
