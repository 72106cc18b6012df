"""The opt-in bubblewrap wrapper (``run_python="bwrap"``, ``--python-sandbox
bwrap``): the launcher starts inside a fresh mount, PID, network, IPC and UTS
namespace that holds only the folders the policy names, then confines
itself as usual (Landlock where the kernel has it, seccomp always). Stronger
where Landlock is missing: what is not mounted cannot be read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .policy import Policy

LAUNCHER_DIR = str(Path(__file__).resolve().parent)


def find() -> str | None:
    """The bwrap program, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def command(policy: Policy, cwd: Path, cgroups: list[str]) -> list[str]:
    """The bwrap command line to put before the launcher's."""
    program = find()
    if program is None:
        raise FileNotFoundError("bwrap is not installed (apt-get install bubblewrap, dnf install bubblewrap)")
    args = [program, "--die-with-parent", "--new-session", "--unshare-all", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp"]
    writable = [p for p in policy.write if not p.startswith("/dev/")]
    for path in [*policy.read, LAUNCHER_DIR]:
        args += _mount("--ro-bind", path)
    for path in [*writable, *(str(Path(c).parent) for c in cgroups)]:
        args += _mount("--bind", path)
    return [*args, "--chdir", str(cwd), "--"]


def _mount(kind: str, path: str) -> list[str]:
    if os.path.islink(path) and path.count("/") == 1:  # /lib -> usr/lib on merged-/usr systems
        return ["--symlink", os.readlink(path), path]
    if not os.path.exists(path):
        return []
    return [kind, path, path]
