"""Tracking: every member's arrival estimated from the programme itself while music plays, and the corrections
that keep a group aligned (numpy, no I/O). `estimate` tells members apart; `control` decides what to change.
"""
