"""The opt-in bubblewrap wrapper (``run_python="bwrap"``, ``--python-sandbox
bwrap``): the launcher starts inside a fresh mount, PID, network, IPC and UTS
namespace that holds only the folders the policy names (on a read-only
root: the code writes only the output folder and its private folder, through
the call's quota), then confines itself as usual (Landlock where the kernel
has it, seccomp always). Stronger where Landlock is missing: what is not
mounted cannot be read. As root there is no user namespace: the launcher
needs real root to run the code as an ordinary uid (``outfolder``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .policy import Policy

LAUNCHER_DIR = str(Path(__file__).resolve().parent)


def find() -> str | None:
    """The bwrap program, or None when bubblewrap is not installed."""
    return shutil.which("bwrap")


def command(policy: Policy, cwd: Path, cgroups: list[str], mount_points: list[str] = ()) -> list[str]:
    """The bwrap command line to put before the launcher's; ``mount_points``:
    empty folders the launcher mounts on inside."""
    program = find()
    if program is None:
        raise FileNotFoundError("bwrap is not installed (apt-get install bubblewrap, dnf install bubblewrap)")
    # as root, no user namespace: the launcher keeps the real root it needs to mount the output idmapped
    # and to run the code as an ordinary uid (in bwrap's user namespace only uid 0 would exist)
    unshare = (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
               if os.geteuid() == 0 else ["--unshare-all"])
    args = [program, "--die-with-parent", "--new-session", *unshare, "--proc", "/proc", "--dev", "/dev",
            *(arg for point in mount_points for arg in ("--dir", point))]
    writable = [p for p in policy.write if not p.startswith("/dev/")]
    binds = [("--ro-bind", p) for p in [*policy.read, LAUNCHER_DIR]]
    binds += [("--bind", p) for p in [*writable, *(str(Path(c).parent) for c in cgroups)]]
    args += _skeleton([p for _, p in binds])
    for kind, path in binds:
        args += _mount(kind, path)
    # the root is bwrap's own tmpfs, unlimited: read-only, so the code writes only through its quota
    return [*args, "--remount-ro", "/", "--chdir", str(cwd), "--"]


def _skeleton(targets: list[str]) -> list[str]:
    """The folders on the way to the mount points, made first and open to
    all (bwrap makes missing ones 0700: an ordinary uid could not pass)."""
    made: list[str] = []
    for target in targets:
        parts = [p for p in target.split("/") if p][:-1]
        for n in range(1, len(parts) + 1):
            folder = "/" + "/".join(parts[:n])
            if folder in made or folder in ("/dev", "/proc") or os.path.islink(folder):
                continue
            if any(folder == t or folder.startswith(t.rstrip("/") + "/") for t in targets):
                break  # inside another mount: bwrap leaves it as it is
            made.append(folder)
    return [arg for folder in made for arg in ("--perms", "0755", "--dir", folder)]


def _mount(kind: str, path: str) -> list[str]:
    if os.path.islink(path) and path.count("/") == 1:  # /lib -> usr/lib on merged-/usr systems
        return ["--symlink", os.readlink(path), path]
    if not os.path.exists(path):
        return []
    return [kind, path, path]
