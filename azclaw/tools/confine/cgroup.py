"""A control group per run_python call, where the kernel lets us make one:
it holds the whole process tree (``setsid`` cannot leave it), caps its
process count and total memory, and kills it in one step.

cgroup v2 (a child of our own group): ``cgroup.kill`` always, ``pids.max``
and ``memory.max`` when the parent hands those controllers down. cgroup v1
(hybrid systems): a child in the ``pids`` and ``memory`` hierarchies.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

_counter = itertools.count(1)
PREFIX = "azclaw-"


@dataclass
class Cgroup:
    """The groups made for one call; ``controls`` names what they enforce."""

    paths: list[Path] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)

    @property
    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths]

    def members(self) -> set[int]:
        pids: set[int] = set()
        for path in self.paths:
            try:
                pids.update(int(x) for x in (path / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return pids

    def kill(self) -> None:
        """Kill every process in the groups (``cgroup.kill`` where there is
        one, else SIGKILL until empty: ``pids.max`` bounds the race)."""
        for path in self.paths:
            if (path / "cgroup.kill").exists():
                try:
                    (path / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        for _ in range(200):
            pids = self.members()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.005)

    def remove(self, wait: float = 2.0) -> None:
        deadline = time.monotonic() + wait
        for path in self.paths:
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left behind; the next call removes it (see _sweep)
                    time.sleep(0.01)


def _hierarchies() -> list[tuple[str, Path]]:
    """(kind, folder of our own group) for cgroup v2 and the v1 pids and
    memory hierarchies; kind is 'v2', 'pids' or 'memory'."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    groups = {}
    for line in own:
        parts = line.split(":", 2)
        if len(parts) == 3:
            groups["v2" if parts[0] == "0" else parts[1]] = parts[2]
    found = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point, fstype, options = fields[3], fields[4], rfields[0], rfields[2].split(",")
        if fstype == "cgroup2":
            kind = "v2"
        elif fstype == "cgroup" and ("pids" in options or "memory" in options):
            kind = "pids" if "pids" in options else "memory"
        else:
            continue
        key = kind if kind == "v2" else next((k for k in groups if kind in k.split(",")), None)
        path = groups.get(key) if key else None
        if path is None:
            continue
        if root != "/" and path.startswith(root):
            path = path[len(root):]
        found.append((kind, Path(point) / path.lstrip("/")))
    return found


def _sweep(parent: Path) -> None:
    """Remove groups left by azclaw processes that are gone."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        owner = entry.name[len(PREFIX):].split("-")[0] if entry.name.startswith(PREFIX) else ""
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            stale = Cgroup([entry])
            stale.kill()
            stale.remove(wait=0.2)


def create(processes: int, memory_bytes: int) -> Cgroup | None:
    """Make the groups for one call (None when none can be made here)."""
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    group = Cgroup()
    for kind, parent in _hierarchies():
        if kind != "v2" and kind in group.controls:
            continue
        path = parent / name
        try:
            _sweep(parent)
            path.mkdir()
        except OSError:
            continue
        group.paths.append(path)
        settings = {"pids": [("pids.max", str(processes))],
                    "memory": [("memory.limit_in_bytes", str(memory_bytes)),
                               ("memory.memsw.limit_in_bytes", str(memory_bytes))],
                    "v2": [("pids.max", str(processes)), ("memory.max", str(memory_bytes)),
                           ("memory.swap.max", "0")]}[kind]
        for filename, value in settings:
            try:
                (path / filename).write_text(value)
            except OSError:
                continue
            control = filename.split(".")[0]
            if control not in group.controls:
                group.controls.append(control)
        if kind == "v2" and (path / "cgroup.kill").exists():
            group.controls.append("kill")
    return group if group.paths else None
