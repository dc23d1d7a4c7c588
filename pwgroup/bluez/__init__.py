"""BlueZ over D-Bus: what Bluetooth knows about speakers (paired, connected, battery, codec, delay) and the
actions that change it (connect, trust, discover, pair), plus the reconnect policy that brings speakers back.
"""
