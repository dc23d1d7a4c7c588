"""Showing text that came from the air (speaker names, node names): every interface prints it through here.

A name may hold escape sequences, control or direction characters, or Textual/Rich markup; all are shown literally.
"""

from __future__ import annotations

_BIDI = {0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def safe_text(text: str, limit: int | None = None) -> str:
    """Show a string from the air literally: control, escape and direction characters become visible escapes."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI or 0xD800 <= code < 0xE000:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    shown = "".join(out)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown
