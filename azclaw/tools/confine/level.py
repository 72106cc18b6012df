"""The sandbox level actually applied, learned by a self-test: a confined
child tries a forbidden read, a forbidden write, a network socket, a setuid
file and a write past a small quota, and each must fail. Never claimed from
code alone."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import landlock, runner
from .policy import Limits

PROBE = """
import json, os, socket
r = {"uid": os.geteuid()}
for name, act in (("read", lambda: open(SECRET).read()), ("write", lambda: open(SECRET + ".w", "w")),
                  ("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
                  ("setuid", lambda: os.chmod(open("setuid", "w").name, 0o4755)),
                  ("quota", lambda: open("quota", "wb").write(b"x" * (2 << 20)))):
    try:
        act()
        r[name] = "allowed"
    except OSError as exc:
        r[name] = exc.errno
print(json.dumps(r))
"""
PROBE_LIMITS = Limits(cpu_seconds=21, quota_bytes=1 << 20, quota_files=64)  # the probe writes 2 MB: refused
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class SandboxLevel:
    """What confines run_python here, as verified by ``probe_sandbox``."""

    landlock: int = 0  # the Landlock ABI applied and seen to refuse a read and a write (0: none)
    seccomp: bool = False  # a network socket was seen refused
    namespaces: tuple[str, ...] = ()
    cgroup: tuple[str, ...] = ()  # kill, pids, memory
    rlimits: tuple[str, ...] = ()
    capabilities_dropped: bool = False
    files_refused: bool = False  # the probe's read and write outside both failed
    mode: str = "sandboxed"  # or "bwrap", or "unsandboxed" (the user's choice)
    problems: tuple[str, ...] = field(default_factory=tuple)
    quota: bool = False  # a write past the call's quota was seen refused
    setuid_refused: bool = False  # making a setuid file was seen refused
    uid: int = -1  # the uid the probe ran as (-1: unknown)

    @property
    def confined(self) -> bool:
        """Files and network both confined: run_python may run by default."""
        return (self.landlock > 0 or self.mode == "bwrap" and self.files_refused) and self.seccomp

    @property
    def signals_scoped(self) -> bool:
        return self.landlock >= 6 or "pid" in self.namespaces

    @property
    def text(self) -> str:
        named = (
            (self.mode == "bwrap", "bwrap (mount, pid, net, ipc, uts namespaces)"),
            (self.landlock, f"landlock ABI {self.landlock}"),
            (self.seccomp, "seccomp net"),
            (self.namespaces, f"namespaces {','.join(self.namespaces)}"),
            (self.cgroup, f"cgroup {','.join(self.cgroup)}"),
            (self.rlimits, "rlimits"),
            (self.quota, f"write quota {DEFAULT_LIMITS.quota_bytes >> 20} MB/{DEFAULT_LIMITS.quota_files} files"),
            (self.setuid_refused, "no setuid files"),
            (self.uid > 0 and os.geteuid() == 0, f"runs as uid {self.uid}"),
            (self.uid == 0 and self.mode != "unsandboxed", "runs as root without capabilities"),
        )
        parts = [words for present, words in named if present]
        text = "rlimits only" if parts == ["rlimits"] else " + ".join(parts) or "none"
        if self.mode == "bwrap" and not self.confined:
            text = text.replace("bwrap (mount, pid, net, ipc, uts namespaces)", "bwrap not working")
        if self.mode == "unsandboxed":
            text += " (unsandboxed by choice)"
        return text

    def as_dict(self) -> dict:
        return {"text": self.text, "confined": self.confined, "landlock": self.landlock,
                "seccomp": self.seccomp, "namespaces": list(self.namespaces), "cgroup": list(self.cgroup),
                "mode": self.mode, "problems": list(self.problems), "quota": self.quota,
                "setuid_refused": self.setuid_refused, "uid": self.uid}


_cache: dict[str, SandboxLevel] = {}
_lock = threading.Lock()


def probe_sandbox(mode: str = "sandboxed", refresh: bool = False) -> SandboxLevel:
    """Spawn a confined child that must fail to read, write and open a
    socket; return the level seen (cached per process and mode)."""
    with _lock:
        if refresh or mode not in _cache:
            _cache[mode] = _probe(mode)
        return _cache[mode]


def _probe(mode: str) -> SandboxLevel:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="azclaw-probe-") as tmp:
        secret = Path(tmp) / "outside" / "secret.txt"
        secret.parent.mkdir()
        secret.write_text("probe")
        code = f"SECRET = {str(secret)!r}\n{PROBE}"
        attempts = [dict(confine=True), dict(confine=True, namespaces=()), dict(confine=False)]
        if mode == "unsandboxed":
            attempts = [dict(confine=False, namespaces=("pid",)), dict(confine=False, namespaces=())]
            problems.append("the OS sandbox is off by the user's choice")
        elif mode == "bwrap":
            attempts = [dict(confine=True, bwrap=True)]
        elif landlock.abi() == 0:
            problems.append("Landlock is not available in this kernel (or disabled at boot)")
        for options in attempts:
            try:
                outcome = runner.run(code, Path(tmp) / "output", timeout=20, limits=PROBE_LIMITS, **options)
                break
            except runner.SetupError as exc:
                problems.append(str(exc))
        else:
            return SandboxLevel(mode=mode, problems=tuple(problems))
    try:
        seen = json.loads(outcome.output.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        seen = {}
        problems.append(f"the probe gave no answer ({outcome.status})")
    setup, confined = outcome.report("setup"), outcome.report("confined")
    files_refused = seen.get("read") not in ("allowed", None) and seen.get("write") not in ("allowed", None)
    version = int(confined.get("landlock", 0)) if files_refused else 0
    if confined.get("landlock") and not files_refused:
        problems.append("Landlock was applied but the probe could read or write outside")
    net_refused = seen.get("socket") not in ("allowed", None)
    quota = seen.get("quota") not in ("allowed", None) and outcome.report("setup").get("quota") == "1"
    return SandboxLevel(
        landlock=version, seccomp=net_refused and confined.get("seccomp") == "1",
        namespaces=tuple(n for n in setup.get("ns", "").split(",") if n),
        cgroup=tuple(_cgroup_controls()), rlimits=tuple(n for n in confined.get("rlimits", "").split(",") if n),
        capabilities_dropped=confined.get("caps") == "1", files_refused=files_refused, mode=mode,
        problems=tuple(problems), quota=quota, setuid_refused=seen.get("setuid") not in ("allowed", None),
        uid=int(seen.get("uid", -1)))


def _cgroup_controls() -> list[str]:
    from . import cgroup
    group = cgroup.create(4, 1 << 30)
    if group is None:
        return []
    group.remove()
    return sorted(group.controls)
