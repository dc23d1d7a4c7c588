"""The dashboard's widgets: each shows one part of a Snapshot and knows nothing of where it came from."""
