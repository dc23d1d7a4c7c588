"""BlueZ's D-Bus errors as typed pwgroup errors, each one line for the user.

`org.bluez.Error.AuthenticationFailed` and friends become exceptions the reconnect policy can tell apart.
"""

from __future__ import annotations

from pwgroup.model import EXIT_UNREACHABLE, EXIT_USER, PwgroupError


class BluetoothError(PwgroupError):
    """BlueZ refused or failed an action; `name` is the D-Bus error name, `reason` BlueZ's text."""

    exit_code = 1

    def __init__(self, message: str, name: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.reason = reason


class BluetoothUnavailable(BluetoothError):
    """No system bus, or no BlueZ on it: pwgroup works on from PipeWire's view."""

    exit_code = EXIT_UNREACHABLE


class UnknownDevice(BluetoothError):
    exit_code = EXIT_USER


class AuthenticationFailed(BluetoothError):
    """The speaker rejected us (forgotten pairing, wrong key): retrying in a loop never helps."""


class ConnectFailed(BluetoothError):
    """Out of range, powered off, busy (e.g. `br-connection-page-timeout`): worth retrying later."""


class NotReady(BluetoothError):
    """The adapter is off or BlueZ is still starting."""


class InProgress(BluetoothError):
    pass


_AUTH = {
    "org.bluez.Error.AuthenticationFailed",
    "org.bluez.Error.AuthenticationRejected",
    "org.bluez.Error.AuthenticationCanceled",
    "org.bluez.Error.AuthenticationTimeout",
}
_UNAVAILABLE = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
}


def from_dbus(name: str, text: str, what: str) -> BluetoothError:
    """The typed error for D-Bus error `name` with BlueZ's `text`, while doing `what` (e.g. 'connect AA:..')."""
    # BlueZ relays text from the remote side at times: one printable line, never escape sequences.
    reason = "".join(c if c.isprintable() else "?" for c in text.splitlines()[0][:200]) if text else ""
    detail = f": {reason}" if reason else ""
    if name in _AUTH:
        return AuthenticationFailed(
            f"{what} failed: authentication failed{detail}; remove and pair the speaker again",
            name,
            reason,
        )
    if name in _UNAVAILABLE:
        return BluetoothUnavailable(f"Bluetooth control unavailable: BlueZ is not running ({name})", name, reason)
    if name in ("org.bluez.Error.DoesNotExist", "org.freedesktop.DBus.Error.UnknownObject"):
        return UnknownDevice(f"{what} failed: BlueZ does not know this device; run 'pwgroup scan'", name, reason)
    if name == "org.bluez.Error.NotReady":
        return NotReady(f"{what} failed: the Bluetooth adapter is not ready (powered off?)", name, reason)
    if name == "org.bluez.Error.InProgress":
        return InProgress(f"{what} failed: another operation is in progress; try again", name, reason)
    if name in ("org.bluez.Error.Failed", "org.bluez.Error.ConnectionAttemptFailed", "org.bluez.Error.NotAvailable"):
        return ConnectFailed(f"{what} failed{detail or ': the speaker did not answer'}", name, reason)
    short = name.rsplit(".", 1)[-1] or "error"
    return BluetoothError(f"{what} failed: {short}{detail}", name, reason)
