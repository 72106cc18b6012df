"""The orchestrator's side of a run_python call: start the launcher, read
the output with a byte bound and a deadline (a pipe held open by a daemon
never hangs the run), and kill the whole process tree at the end.

The tree is killed three ways, each enough on its own where it applies: the
descendants of the launcher (a subreaper, so ``setsid`` and double forks
stay under it) are stopped, then killed; the call's control group is
killed; the PID namespace dies with its first process. The launcher itself
lives on to copy the output back (``outfolder``); then no file in the output
folder keeps a setuid or setgid bit (``strip_privileged``).
"""

from __future__ import annotations

import marshal
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroup
from .bwrap import command as bwrap_command
from .oslimits import user_process_count
from .outfolder import SANDBOX_UID, strip_privileged
from .policy import Limits, make_policy

LAUNCHER = str(Path(__file__).with_name("launch.py"))
DRAIN_SECONDS = 2.0
REAP_SECONDS = 2.0
COPY_BACK_SECONDS = 120.0  # generous: copying back a call's quota (200 MB) on a busy disk


class SetupError(RuntimeError):
    """The sandbox could not be set up; the code did not run."""


@dataclass
class Outcome:
    """What one call gave: its status line, output and the sandbox reports."""

    status: str
    output: bytes
    dropped: int = 0
    exit_code: int | None = None
    timed_out: bool = False
    reports: dict[str, str] = field(default_factory=dict)  # setup / confined / output -> "key=value ..."
    stripped: list[str] = field(default_factory=list)  # output files whose setuid/setgid bit was cleared
    notes: list[str] = field(default_factory=list)  # what the tool result should say (no quota, not copied back)
    unchecked: list[str] = field(default_factory=list)  # source folders hidden because too large to check

    def report(self, name: str) -> dict[str, str]:
        return dict(kv.split("=", 1) for kv in self.reports.get(name, "").split() if "=" in kv)


def run(code: str, cwd: Path, *, sources=(), timeout: float = 30.0, output_bytes: int = 32_000,
        confine: bool = True, namespaces: tuple[str, ...] = ("pid", "net", "ipc"), use_cgroup: bool = True,
        limits: Limits | None = None, bwrap: bool = False, hidden=None) -> Outcome:
    """Run ``code`` with ``python -I -c`` in ``cwd``; raise SetupError when the
    sandbox could not be applied (the code then never ran). ``bwrap``: start
    the launcher inside bubblewrap (which makes the namespaces; Landlock is
    then applied where the kernel has it). ``hidden("rel/path", is_dir)``:
    what the code may not read in the source folders (None: all of them).
    Confined, the call writes through a quota (``limits.quota_bytes``,
    ``quota_files``) and, when we are root, runs as ``SANDBOX_UID``."""
    cwd = Path(cwd).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    limits = limits or Limits(cpu_seconds=int(timeout) + 1)
    private = Path(tempfile.mkdtemp(prefix="azclaw-py-"))
    staging = Path(tempfile.mkdtemp(prefix="azclaw-quota-"))  # a mount point, only in the call's namespace
    group = cgroup.create(limits.processes + 2, limits.tree_memory_bytes) if use_cgroup else None
    try:
        policy = make_policy(cwd, list(sources), private, limits, hidden)
        nproc = None
        if (group is None or "pids" not in group.controls) and os.getuid() != 0:
            count = user_process_count()  # RLIMIT_NPROC counts all our processes (0: no /proc to count)
            nproc = count + limits.processes if count else None
        cgroups = group.procs_files if group else []
        quota = None
        if confine and limits.quota_bytes > 0:
            quota = {"bytes": limits.quota_bytes, "files": limits.quota_files, "staging": str(staging),
                     "homes": [str(private)],
                     "uid": SANDBOX_UID if os.geteuid() == 0 else None,
                     "sources": [str(Path(s).resolve()) for s in sources]}
        spec = {"code": code, "python": sys.executable, "read": policy.read, "write": policy.write,
                "listing": policy.listing, "cwd": str(cwd), "quota": quota,
                "confine": confine, "namespaces": [] if bwrap else list(namespaces), "nproc": nproc,
                "cgroups": cgroups, "limits": dict(limits.__dict__), "landlock": "optional" if bwrap else "required"}
        try:
            wrapper = bwrap_command(policy, cwd, cgroups, [str(staging)]) if bwrap else []
        except FileNotFoundError as exc:
            raise SetupError(str(exc)) from None
        outcome = _launch(wrapper, spec, cwd, policy.env, timeout, output_bytes, group)
        outcome.unchecked = list(policy.unchecked)
        return outcome
    finally:
        if group is not None:
            group.remove()
        _remove(private)
        _remove(staging)


def _launch(wrapper: list[str], spec: dict, cwd: Path, env: dict, timeout: float, output_bytes: int,
            group) -> Outcome:
    proc = subprocess.Popen([*wrapper, sys.executable, "-I", "-S", LAUNCHER], cwd=cwd, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    reader = _Reader(proc, output_bytes)
    try:
        try:
            data = marshal.dumps(spec)
            proc.stdin.write(b"%d\n" % len(data) + data)
            proc.stdin.flush()
        except OSError:
            pass  # the launcher died: its status says why
        deadline = time.monotonic() + timeout
        ended = reader.until_end(deadline)
        late = time.monotonic() >= deadline
    finally:
        kill_tree(proc, group, settle=COPY_BACK_SECONDS if spec.get("quota") else REAP_SECONDS,
                  inside_bwrap=bool(wrapper))
        reader.drain(time.monotonic() + DRAIN_SECONDS)
        reader.close()
    if "error" in reader.reports:
        raise SetupError(reader.reports["error"])
    stripped = [p for p in reader.reports.get("stripped", "").splitlines() if p]
    stripped += [p for p in strip_privileged(cwd) if p not in stripped]
    notes = [n for n in reader.reports.get("note", "").splitlines() if n]
    if spec.get("quota") and reader.reports.get("setup", "").endswith("quota=1") and "output" not in reader.reports:
        notes.append("the output was not copied back in time: some files the code wrote may be missing")
    outcome = Outcome("", bytes(reader.out), reader.dropped, reports=reader.reports, stripped=stripped, notes=notes)
    if ended is None and late:
        outcome.status, outcome.timed_out = f"killed after {timeout:g}s time limit", True
    elif ended is None:  # the launcher itself died (the OOM killer's choice, say): the code with it
        outcome.status = "ended early: the sandbox launcher died"
    elif ended[0] == "signal":
        outcome.status = f"killed by {_signal_name(ended[1])}"
    else:
        outcome.exit_code = ended[1]
        outcome.status = f"exit code {ended[1]}"
    if ended is None and "confined" not in reader.reports:  # the code never ran
        said = reader.reports.get("other", "")
        raise SetupError(f"the sandbox launcher did not start: {said}" if said else
                         f"the sandbox launcher did not start within {timeout:g}s")
    return outcome


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Reader:
    """Reads the launcher's output (bounded) and status lines, never blocking."""

    def __init__(self, proc: subprocess.Popen, limit: int):
        self.proc, self.limit = proc, limit
        self.out, self.dropped = bytearray(), 0
        self.reports: dict[str, str] = {}
        self.ended: tuple[str, int] | None = None
        self._status = b""
        self.sel = selectors.DefaultSelector()
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self.sel.register(stream, selectors.EVENT_READ)

    def _pump(self, wait: float) -> bool:
        """Read what is ready; False when both pipes are closed."""
        if not self.sel.get_map():
            return False
        for key, _ in self.sel.select(max(wait, 0)):
            try:
                data = os.read(key.fileobj.fileno(), 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.sel.unregister(key.fileobj)
            elif key.fileobj is self.proc.stdout:
                room = max(self.limit - len(self.out), 0)
                self.out += data[:room]
                self.dropped += len(data) - min(room, len(data))
            else:
                self._status += data
                self._parse()
        return True

    def _parse(self) -> None:
        *lines, self._status = self._status.split(b"\n")
        for raw in lines:
            word, _, rest = raw.decode("utf-8", "replace").partition(" ")
            if word in ("exit", "signal") and rest.strip().lstrip("-").isdigit():
                self.ended = (word, int(rest))
            elif word in ("setup", "confined", "error", "output"):
                self.reports[word] = rest
            elif word in ("note", "stripped") and len(self.reports.get(word, "")) < 4000:
                self.reports[word] = (self.reports.get(word, "") + "\n" + rest).strip("\n")
            elif raw.strip() and len(self.reports.get("other", "")) < 2000:  # bwrap's own complaints
                self.reports["other"] = (self.reports.get("other", "") + " " + raw.decode("utf-8", "replace")).strip()

    def until_end(self, deadline: float):
        while self.ended is None and "error" not in self.reports:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(min(left, 0.5)):
                break
            if self.proc.poll() is not None and self.ended is None:
                self._pump(0)  # the launcher is gone: read its last words
                break
        return self.ended

    def drain(self, deadline: float) -> None:
        while time.monotonic() < deadline and self._pump(min(deadline - time.monotonic(), 0.2)):
            pass

    def close(self) -> None:
        self.sel.close()
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            try:
                stream.close()
            except OSError:
                pass


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return children
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (by parent links in /proc)."""
    children = _children_map()
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _launcher_in(root: int) -> int:
    """The launcher under bubblewrap: the first process below ``root`` that
    is not bwrap (the code's processes all lie below the launcher)."""
    children, level = _children_map(), [root]
    while level:
        level = [child for parent in level for child in children.get(parent, [])]
        for pid in level:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap":
                    return pid
            except OSError:
                continue
    return root


def kill_tree(proc: subprocess.Popen, group=None, settle: float = REAP_SECONDS, inside_bwrap: bool = False) -> None:
    """Stop every descendant of the launcher (stopped processes cannot fork)
    until no new one appears, kill them all, let the launcher reap them and
    copy the output back (``settle`` seconds at most), then kill the control
    group, bubblewrap and the launcher for anything left."""
    killed: set[int] = set()
    if sys.platform.startswith("linux") and proc.poll() is None:
        launcher = _launcher_in(proc.pid) if inside_bwrap else proc.pid
        for _ in range(100):
            new = descendants(launcher) - killed
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            killed |= new
        for pid in killed:
            _signal(pid, signal.SIGKILL)
    try:
        proc.stdin.close()  # the launcher's hold: it reaps, copies back and exits
    except OSError:
        pass
    try:
        proc.wait(timeout=settle)
    except subprocess.TimeoutExpired:
        pass
    if group is not None:
        group.kill()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _remove(folder: Path) -> None:
    def unlock(func, path, _exc):  # code may have made a folder unwritable
        try:
            os.chmod(os.path.dirname(path), 0o700)
            func(path)
        except OSError:
            pass
    shutil.rmtree(folder, onerror=unlock)
