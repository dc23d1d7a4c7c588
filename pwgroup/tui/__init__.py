"""The dashboard: a Textual terminal UI over the same desired and observed state as the CLI.

`state` holds the data and edits without Textual; `app`, `screens/` and `widgets/` only show them.
"""
