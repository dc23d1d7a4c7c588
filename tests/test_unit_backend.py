"""The Backend is the only door to a sound server: callers read its capabilities and never ask which one it
is, and a server's versions become capabilities and workarounds. Read from the source and pure functions."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import numpy as np
import pytest

from pwgroup.graph import QUANTUM_SKIP, SUSPEND_CRASH, Capabilities, StreamTools, parse_version
from pwgroup.graph.capture import stdin_playback_argv
from pwgroup.graph.pipewire import member_config, pipewire_capabilities, session_manager_of, sink_props
from pwgroup.graph.proc import pipewire_library_version, wireplumber_file_version, wireplumber_library_version
from pwgroup.graph.pulse import PulseBackend
from pwgroup.graph.select import pulse_socket
from pwgroup.model import GroupSpec, MemberSpec, UserError

PACKAGE = Path(__file__).resolve().parent.parent / "pwgroup"
BACKEND_NAMES = {"be", "backend"}


def _sources(under: Path) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(under.rglob("*.py"))]


def _core_sources() -> list[tuple[Path, ast.Module]]:
    return _sources(PACKAGE)


def _is_backend(node: ast.expr) -> bool:
    """`be`, `backend`, `self.be`, `self.backend`: how the code names a backend it holds."""
    if isinstance(node, ast.Name):
        return node.id in BACKEND_NAMES
    return isinstance(node, ast.Attribute) and node.attr in BACKEND_NAMES


def test_calibration_reaches_the_server_only_through_the_backend() -> None:
    sources = _sources(PACKAGE / "calibrate")
    assert sources
    for path, tree in sources:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = {a.name for a in node.names}
                assert module not in ("pwgroup.graph.capture", "pwgroup.graph.proc", "pwgroup.graph.pipewire"), path
                assert not (module == "pwgroup.graph" and names & {"capture", "proc", "pipewire", "pulse"}), path
            if isinstance(node, ast.Import):
                assert not any(a.name in ("subprocess", "pwgroup.graph.capture") for a in node.names), path
            # The environment a backend reaches its server with is the backend's business.
            assert not (isinstance(node, ast.Attribute) and node.attr == "env"), (path, node.lineno)


def test_calibration_is_typed_with_the_backend_protocol() -> None:
    for path, tree in _sources(PACKAGE / "calibrate"):
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                for arg in node.args.args:
                    if arg.arg in BACKEND_NAMES:
                        assert arg.annotation is not None and ast.unparse(arg.annotation) == "Backend", (
                            path,
                            node.name,
                        )


def test_no_caller_asks_which_backend_it_holds() -> None:
    checked = 0
    for path, tree in _core_sources():
        for node in ast.walk(tree):
            # be.name == "pipewire", backend.name != "pulse", ...
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Attribute) and side.attr == "name" and _is_backend(side.value):
                        raise AssertionError(f"{path}:{node.lineno} compares a backend's name")
            # getattr(be, ...), hasattr(self.backend, ...), isinstance(be, PulseBackend)
            probe = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id
            if probe in ("getattr", "hasattr", "isinstance") and node.args and _is_backend(node.args[0]):
                raise AssertionError(f"{path}:{node.lineno} probes a backend with {probe}")
            # No backend typed Any: parameters, attributes and variables named for one carry `Backend`.
            if isinstance(node, ast.arg) and node.arg in BACKEND_NAMES and node.annotation is not None:
                assert "Any" not in ast.unparse(node.annotation), f"{path}:{node.lineno} types a backend Any"
                checked += 1
            if isinstance(node, ast.AnnAssign) and _is_backend(node.target):
                assert "Any" not in ast.unparse(node.annotation), f"{path}:{node.lineno} types a backend Any"
    assert checked > 10  # the walk saw the backends the core passes around


def test_versions_are_read_from_what_servers_and_tools_print() -> None:
    assert parse_version("0.3.65") == (0, 3, 65)
    assert parse_version("1.0.5-1ubuntu2") == (1, 0, 5)
    assert parse_version("Linked with libwireplumber 0.4.13") == (0, 4, 13)
    assert parse_version("15.99.1 (PulseAudio)") == (15, 99, 1)
    assert parse_version("1.4") == (1, 4, 0)
    for nothing in ("", "unknown", None, 3, "v"):
        assert parse_version(nothing) is None


def test_the_suspend_crash_is_worked_around_only_on_the_wireplumbers_that_have_it() -> None:
    for version, affected in (
        ("0.4.13", True),
        ("0.4.14", True),
        ("0.4.15", False),
        ("0.4.17", False),
        ("0.5.8", False),
        ("0.3.65", False),
        (None, False),
    ):
        caps = pipewire_capabilities("0.3.65", "WirePlumber", version)
        assert (SUSPEND_CRASH in caps.workarounds) is affected, version
    # The crash is WirePlumber's: another session manager with a like-numbered version has not got it.
    assert pipewire_capabilities("0.3.65", "pipewire-media-session", "0.4.13").workarounds == ()


def test_pipewire_capabilities_carry_the_versions_and_what_any_pipewire_does() -> None:
    caps = pipewire_capabilities("1.0.5", "WirePlumber", "0.4.17")
    assert (caps.server, caps.server_version) == ("PipeWire", "1.0.5")
    assert (caps.session_manager, caps.session_manager_version) == ("WirePlumber", "0.4.17")
    assert caps.calibrate and caps.rename_when_idle and caps.member_gain and caps.glitch_free_delay
    assert caps.summary == "PipeWire 1.0.5, WirePlumber 0.4.17"
    data = caps.as_dict()
    assert data["server_version"] == "1.0.5" and data["workarounds"] == [QUANTUM_SKIP] and data["calibrate"] is True
    assert pipewire_capabilities(None, None, None).summary == "PipeWire"
    assert Capabilities(server="PulseAudio", server_version="16.1").summary == "PulseAudio 16.1"


def test_the_session_manager_is_found_among_the_clients() -> None:
    pulse = {"application.name": "pipewire", "config.name": "pipewire-pulse.conf", "core.version": "0.3.65"}
    export = {"application.name": "WirePlumber [export]", "application.version": "9.9.9"}
    plain = {"application.name": "WirePlumber", "core.version": "0.3.65"}
    assert session_manager_of([pulse, export, plain]) == ("WirePlumber", None)  # 0.4 names no version of its own
    announced = {"application.name": "WirePlumber", "application.version": "0.5.8"}
    assert session_manager_of([pulse, announced]) == ("WirePlumber", "0.5.8")
    assert session_manager_of([{"application.name": "pipewire-media-session", "application.version": 3}]) == (
        "pipewire-media-session",
        None,
    )
    assert session_manager_of([pulse]) == (None, None)


def test_pulseaudio_refuses_to_measure_in_one_line_that_says_what_to_do_instead() -> None:
    be = PulseBackend({})
    assert not be.capabilities.calibrate
    for call in (
        be.play_and_record(1, np.zeros(10), [2, 3]),
        be.feed_and_record(np.zeros((10, 2)), [[4], [5]], [2]),
    ):
        with pytest.raises(UserError) as caught:
            asyncio.run(call)
        message = caught.value.message
        assert "needs PipeWire" in message and "delay set" in message and "delay trim" in message
        assert "\n" not in message


@pytest.mark.parametrize(
    ("filename", "version"),
    [
        ("libwireplumber-0.4.so.0.4.13", (0, 4, 13)),  # Debian 12
        ("libwireplumber-0.4.so.0.4.17", (0, 4, 17)),  # Ubuntu 24.04
        ("libwireplumber-0.5.so.0.508.0", (0, 5, 8)),  # Debian 13
        ("libwireplumber-0.5.so.0.513.0", (0, 5, 13)),  # Fedora 43
        ("libwireplumber-0.5.so.0", None),  # the soname link says no micro
        ("libwireplumber-0.5.so.0.412.0", None),  # a number that is neither form
        ("libpipewire-0.3.so.0.365.0", None),
    ],
)
def test_wireplumber_version_is_read_from_its_library_file_name(filename: str, version: object) -> None:
    assert wireplumber_file_version(filename) == version


def test_wireplumber_library_version_needs_one_answer(tmp_path: Path) -> None:
    arch = tmp_path / "usr" / "lib" / "x86_64-linux-gnu"
    arch.mkdir(parents=True)
    (arch / "libwireplumber-0.5.so.0").touch()
    (arch / "libwireplumber-0.5.so.0.508.0").touch()
    assert wireplumber_library_version([str(tmp_path / "usr" / "lib")]) == (0, 5, 8)
    (tmp_path / "usr" / "lib" / "libwireplumber-0.4.so.0.4.13").touch()  # two installs: no guess, ask the binary
    assert wireplumber_library_version([str(tmp_path / "usr" / "lib")]) is None
    assert wireplumber_library_version([str(tmp_path / "nothing")]) is None


def test_the_pulse_socket_is_found_where_libpulse_looks() -> None:
    assert pulse_socket({"PULSE_SERVER": "unix:/run/x/native"}) == Path("/run/x/native")
    assert pulse_socket({"PULSE_SERVER": "/run/x/native"}) == Path("/run/x/native")
    assert pulse_socket({"PULSE_SERVER": "tcp:host:4713"}) is None  # the protocol is asked instead
    assert pulse_socket({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/pulse/native")
    assert pulse_socket({}) is None


@pytest.mark.unit
def test_stream_tools_take_the_arguments_their_version_parses() -> None:
    # 0.3.65 (Debian 12): a comma list and no --raw (it has no such option); 1.4.2 (Debian 13): --raw, or stdin is
    # read as a sound file, and the SPA-JSON array, as its comma parser rejects 3 or 5 channels.
    old, new, unknown = StreamTools((0, 3, 65)), StreamTools((1, 4, 2)), StreamTools(None)
    names = ["AUX0", "AUX1", "AUX2"]
    assert old.channel_map(names) == "AUX0,AUX1,AUX2" and old.raw_stdin() == []
    assert new.channel_map(names) == "[ AUX0 AUX1 AUX2 ]" and new.raw_stdin() == ["--raw"]
    assert StreamTools((1, 3, 80)).raw_stdin() == [] and StreamTools((1, 3, 81)).raw_stdin() == ["--raw"]
    assert unknown.channel_map(names) == old.channel_map(names)
    argv = stdin_playback_argv(names, 512, {"node.name": "x"}, new)
    assert argv[argv.index("--channel-map") + 1] == "[ AUX0 AUX1 AUX2 ]" and "--raw" in argv
    assert argv[argv.index("--channels") + 1] == "3" and argv[-1] == "-"
    assert "--raw" not in stdin_playback_argv(names, 512, {}, old)
    caps = pipewire_capabilities("1.4.2", "WirePlumber", "0.5.8", new)
    assert caps.stream_tools is new and caps.as_dict()["stream_tools"] == "1.4.2"


@pytest.mark.unit
def test_members_lock_the_quantum_only_where_a_quantum_change_skips_their_audio() -> None:
    assert QUANTUM_SKIP not in pipewire_capabilities("0.3.65", "WirePlumber", "0.4.13").workarounds
    assert QUANTUM_SKIP not in pipewire_capabilities(None, "WirePlumber", None).workarounds
    for version in ("1.0.5", "1.4.2", "1.6.2"):
        assert QUANTUM_SKIP in pipewire_capabilities(version, "WirePlumber", "0.5.8").workarounds, version
    member = MemberSpec("AA:BB:CC:00:00:01", 90.0)
    assert '"node.lock-quantum" = true' in member_config("g", member, 48000, lock_quantum=True)
    assert "lock-quantum" not in member_config("g", member, 48000)


@pytest.mark.unit
def test_group_sinks_are_kept_from_suspend_only_where_the_session_manager_crashes_on_it() -> None:
    old = pipewire_capabilities("0.3.65", "WirePlumber", "0.4.13")
    new = pipewire_capabilities("1.4.2", "WirePlumber", "0.5.8")
    for caps, kept in ((old, True), (new, False)):
        props = sink_props(GroupSpec("g", "G"), caps)
        assert ("session.suspend-timeout-seconds" in props) is kept, caps.summary


def test_pipewire_library_version_is_read_from_its_file_name(tmp_path: Path) -> None:
    lib = tmp_path / "lib" / "x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libpipewire-0.3.so.0").touch()
    (lib / "libpipewire-0.3.so.0.1402.0").touch()  # Debian 13's 1.4.2
    assert pipewire_library_version([str(tmp_path / "lib")]) == (1, 4, 2)
    (lib / "libpipewire-0.3.so.0.1402.0").unlink()
    (lib / "libpipewire-0.3.so.0.365.0").touch()  # Debian 12's 0.3.65
    assert pipewire_library_version([str(tmp_path / "lib")]) == (0, 3, 65)
    (lib / "libpipewire-0.3.so.0.1381.0").touch()  # two installs: no guess
    assert pipewire_library_version([str(tmp_path / "lib")]) is None
