"""SPA-JSON writing for PipeWire config files and pw-cli arguments.

Every string is quoted and escaped, so a hostile name can never close a string or open an object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def quote(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dumps(value: Any, indent: int = 0) -> str:
    """Render Python data as SPA-JSON (a subset of JSON that PipeWire's parser reads)."""
    pad = "    " * indent
    inner = "    " * (indent + 1)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Mapping):
        if not value:
            return "{ }"
        items = [f"{inner}{quote(str(k))} = {dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, Sequence):
        if not value:
            return "[ ]"
        if all(isinstance(v, str | int | float) for v in value) and len(value) <= 8:
            return "[ " + " ".join(dumps(v) for v in value) + " ]"
        items = [f"{inner}{dumps(v, indent + 1)}" for v in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    raise TypeError(f"cannot render {type(value).__name__} as SPA-JSON")
