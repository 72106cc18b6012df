"""The launcher: ``python -I -S .../azclaw/confine/launch.py``, started by
the runner. It reads the spec from standard input (its size on a line,
then ``marshal`` data: both ends are the same Python, and the json module
would cost every call 15 ms of imports), joins the
call's control groups, makes new namespaces, forks, and the child confines
itself (limits, no new privileges, no capabilities, Landlock, seccomp)
before it execs Python on the code: nothing runs between fork and exec in
the orchestrator's process, so this is safe with threads.

Standard error is the status channel to the runner, one line each::

    setup ns=pid,net,ipc cgroup=1        (launcher)
    confined landlock=7 seccomp=1 caps=1 rlimits=cpu,as,...   (child, just before exec)
    error <why>                          (child: it did not run the code)
    exit <code> | signal <number>        (launcher: the code's main process ended)

After reporting the end the launcher waits for standard input to close, so
what the code left behind stays its descendant (it is a subreaper) until the
runner has killed it; then it reaps those and exits.
"""

from __future__ import annotations

import marshal
import os
import sys

if __package__:
    from . import landlock, oslimits, seccomp
else:  # run as a script: the sibling modules, without importing all of azclaw
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import landlock  # noqa: E402
    import oslimits  # noqa: E402
    import seccomp  # noqa: E402

SETUP_FAILED = 125


def _status(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _confine(spec: dict) -> str:
    """In the child: apply everything; return the report line."""
    try:
        oslimits.die_with_parent()
    except OSError:
        if spec.get("confine"):
            raise  # Linux has it; elsewhere (unsandboxed by choice) the runner's kill is enough
    applied = oslimits.apply_rlimits(spec["limits"], spec.get("nproc"))
    parts = [f"rlimits={','.join(applied)}"]
    if spec.get("confine"):
        own = os.readlink("/proc/self")  # this process's number as /proc knows it (namespaces)
        oslimits.no_new_privs()
        caps = oslimits.drop_capabilities()
        version = 0
        if spec.get("landlock", "required") == "required" or landlock.abi() > 0:
            version = landlock.restrict(spec["read"] + [f"/proc/{own}"], spec["write"])
        seccomp.install()
        parts = [f"landlock={version}", "seccomp=1", f"caps={int(caps)}", *parts]
    return "confined " + " ".join(parts)


def _child(spec: dict, status: int) -> None:
    try:
        report = _confine(spec)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
    except Exception as exc:  # noqa: BLE001 - any failure: the code must not run
        _status(status, f"error sandbox setup failed: {type(exc).__name__}: {exc}")
        os._exit(SETUP_FAILED)
    _status(status, report)
    os.dup2(1, 2)
    python = spec["python"]
    try:
        os.execve(python, [python, "-I", "-c", spec["code"]], os.environ)
    except OSError as exc:
        _status(status, f"error cannot start {python}: {exc.strerror}")
    os._exit(SETUP_FAILED)


def main() -> None:
    status = 2
    try:
        size = int(sys.stdin.buffer.readline())
        spec = marshal.loads(sys.stdin.buffer.read(size))
        for procs in spec.get("cgroups", []):
            with open(procs, "w", encoding="ascii") as fh:
                fh.write(str(os.getpid()))
        wanted = spec.get("namespaces") or []
        names = oslimits.new_namespaces(net="net" in wanted) if "pid" in wanted else []
        try:
            oslimits.become_subreaper()
        except OSError:
            if spec.get("confine"):
                raise
    except Exception as exc:  # noqa: BLE001 - reported, and the code does not run
        _status(status, f"error sandbox setup failed: {type(exc).__name__}: {exc}")
        os._exit(SETUP_FAILED)
    _status(status, f"setup ns={','.join(names)} cgroup={len(spec.get('cgroups', []))}")
    child = os.fork()
    if child == 0:
        own_status = os.dup(status)  # close-on-exec: the code never sees the channel
        _child(spec, own_status)
    code = 0
    while True:
        try:
            pid, code = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            break
    if os.WIFSIGNALED(code):
        _status(status, f"signal {os.WTERMSIG(code)}")
    else:
        _status(status, f"exit {os.WEXITSTATUS(code)}")
    sys.stdin.buffer.read()  # hold: the runner closes our standard input when it has killed the rest
    while True:  # reap what it killed, so no zombie is left to init
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    os._exit(0)


if __name__ == "__main__":
    main()
