#!/usr/bin/env python3
"""The other Debian stack for the test suite: a Debian root (12 on a Debian 13 host, 13 on a Debian 12 host) made
once with mmdebstrap from Debian's packages, and the suite run inside it in a PID and mount namespace of its own.

Nothing is mounted on the host: every mount lives in the namespace and goes with it. The root is kept under
PWGROUP_STACK_DIR (default /var/tmp/pwgroup-stack) and made again only when the package list or this script's
recipe changes. Usage, from the checkout (needs root): `python3 tests/stack.py [--build-only] [PYTEST ARGS...]`;
`python3 tests/stack.py --run COMMAND [ARGS...]` runs any command there instead (`--run bash` for a shell, with
the checkout at /src and the project's venv first on PATH), to try the program on the other stack by hand.
Standard library only: it runs on the host's Python before any venv exists.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
# What the suite needs inside the root: the sound servers, the tools the tests drive, Python with venv.
DEBS = [
    "pipewire",
    "pipewire-bin",
    "wireplumber",
    "pipewire-pulse",
    "pulseaudio",
    "pulseaudio-utils",
    "dbus",
    "dbus-daemon",
    "python3-venv",
    "python3-dev",
    "ca-certificates",
    "procps",
    "zsh",
    "man-db",
    "groff-base",
    "lua5.4",
    "tmux",
    "make",
    "gcc",
]
OTHER = {"bookworm": ("trixie", "Debian 13"), "trixie": ("bookworm", "Debian 12")}
RECIPE = "2"  # bump when the way the root is made changes
VENV = "/opt/pwgroup-venv"
MOUNT_AT = "/src"


def host_codename() -> str:
    fields = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line.strip()
    )
    return fields.get("VERSION_CODENAME", "").strip('"')


def requirements() -> list[str]:
    """The project's dependencies and its test extra, read from pyproject.toml (the package itself is not
    installed in the root: the suite imports it from the checkout)."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def stamp(codename: str) -> str:
    """What the root's packages are made from: a change makes the root again."""
    text = "\n".join([RECIPE, codename, *DEBS])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_stamp() -> str:
    """What the root's venv holds: a change only installs into it again."""
    return hashlib.sha256("\n".join(requirements()).encode()).hexdigest()[:16]


def root_dir(codename: str) -> Path:
    """One root per recipe: checkouts at different recipes (branches side by side on one machine) each keep
    theirs instead of making the other's again at every run."""
    return Path(os.environ.get("PWGROUP_STACK_DIR", "/var/tmp/pwgroup-stack")) / f"{codename}-{stamp(codename)}"


def prune(codename: str, keep: Path, idle_days: float = 7.0) -> None:
    """Roots of this codename at other recipes that no run has used for `idle_days`."""
    for other in keep.parent.glob(f"{codename}-*"):
        used = other / "etc" / "pwgroup-stack-used"
        if other != keep and used.exists() and time.time() - used.stat().st_mtime > idle_days * 86400:
            say(f"removing {other}: unused for {idle_days:g} days")
            shutil.rmtree(other, ignore_errors=True)


def say(text: str) -> None:
    print(f"stack.py: {text}", flush=True)


def build(codename: str) -> Path:
    """Make the root (or reuse it when its stamp matches): packages by mmdebstrap, then a venv with the
    project's Python dependencies from PyPI."""
    root = root_dir(codename)
    want = stamp(codename)
    marker = root / "etc" / "pwgroup-stack"
    if marker.exists() and marker.read_text().strip() == want:
        install_requirements(root)
        (root / "etc" / "pwgroup-stack-used").touch()
        prune(codename, root)
        return root
    if shutil.which("mmdebstrap") is None:
        say("installing mmdebstrap")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "mmdebstrap"], check=True, env=env)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    say(f"making a {codename} root in {root} (once)")
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=apt",
            "--quiet",
            f"--include={','.join(DEBS)}",
            codename,
            str(root),
            "http://deb.debian.org/debian",
        ],
        check=True,
    )
    # pip inside the root trusts what the host trusts (the host's bundle may hold a proxy's CA).
    bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        shutil.copyfile(bundle, root / "etc/ssl/certs/ca-certificates.crt")
    if enter(root, ["python3", "-m", "venv", VENV], mount_checkout=False) != 0:
        raise SystemExit("stack.py: could not make the venv in the root")
    install_requirements(root)
    # The package itself comes from the checkout mounted at /src, for every Python started in the root (a
    # PYTHONPATH would be lost by tests that set their own).
    for site in (root / VENV.lstrip("/")).glob("lib/python3*/site-packages"):
        (site / "pwgroup-checkout.pth").write_text(MOUNT_AT + "\n")
    marker.write_text(want + "\n")
    (root / "etc" / "pwgroup-stack-used").touch()
    return root


def install_requirements(root: Path) -> None:
    """The project's Python dependencies into the root's venv, again only when pyproject.toml's lists change."""
    marker = root / VENV.lstrip("/") / "pwgroup-requirements"
    want = venv_stamp()
    if marker.exists() and marker.read_text().strip() == want:
        return
    say("installing the Python dependencies into the root's venv")
    pip = f"{VENV}/bin/python -m pip install -q --disable-pip-version-check"
    setup = f"{pip} --upgrade pip && {pip} " + " ".join(shlex.quote(r) for r in requirements())
    if enter(root, ["sh", "-c", setup], mount_checkout=False) != 0:
        raise SystemExit("stack.py: pip could not install the requirements in the root")
    marker.write_text(want + "\n")


def enter(root: Path, argv: list[str], mount_checkout: bool = True) -> int:
    """Run argv in the root, in new PID and mount namespaces: /dev, /proc, a fresh /tmp and /dev/shm, the
    checkout at /src; all of it unmounted when the namespace ends."""
    mounts = [
        f"mount --rbind /dev {root}/dev",
        f"mount -t proc proc {root}/proc",
        f"mount -t tmpfs tmpfs {root}/tmp",
        f"mount -t tmpfs tmpfs {root}/dev/shm",
        f"mount -t tmpfs tmpfs {root}/run",
    ]
    if mount_checkout:
        (root / MOUNT_AT.lstrip("/")).mkdir(exist_ok=True)
        mounts.append(f"mount --bind {shlex.quote(str(CHECKOUT))} {root}{MOUNT_AT}")
    env = {
        "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is the host's: leave no 3.13 caches in it
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        "CI": os.environ.get("CI", ""),
    }
    workdir = MOUNT_AT if mount_checkout else "/"
    chroot = ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items())]
    chroot += ["sh", "-c", f'cd {workdir} && exec "$@"', "sh", *argv]
    # The shell stays as the namespace's PID 1 (no exec): orphans are reparented to it, not to pytest, whose tests
    # look for their own leftover children; and PID 1 ignores signals it has no handler for.
    script = " && ".join([*mounts, '"$@"'])
    cmd = ["unshare", "--pid", "--mount", "--fork", "--propagation", "private", "sh", "-c", script, "sh", *chroot]
    return subprocess.run(cmd).returncode


def describe(root: Path) -> str:
    """The stack's versions, as the output names it."""
    out = []
    for tool in ("pipewire", "wireplumber", "pulseaudio"):
        proc = subprocess.run(
            ["chroot", str(root), tool, "--version"], capture_output=True, text=True, check=False, timeout=30
        )
        words = proc.stdout.replace("\n", " ").split()
        version = next((w for w in reversed(words) if w[:1].isdigit()), "?")
        out.append(f"{tool} {version}")
    return ", ".join(out)


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("stack.py: needs root (mmdebstrap, unshare, chroot): run it as root or through sudo", file=sys.stderr)
        return 2
    here = host_codename()
    if here not in OTHER:
        say(f"this is not Debian 12 or 13 ({here or 'unknown'}): no other stack to test")
        return 0
    codename, label = OTHER[here]
    root = build(codename)
    if argv[:1] == ["--build-only"]:
        return 0
    if argv[:1] == ["--run"]:
        if len(argv) < 2:
            print("stack.py: --run needs a command, e.g. --run bash", file=sys.stderr)
            return 2
        say(f"{shlex.join(argv[1:])} on {label}'s stack ({describe(root)})")
        return enter(root, argv[1:])
    say(f"the suite on {label}'s stack ({describe(root)})")
    return enter(root, ["python", "-m", "pytest", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
