"""The launcher: ``python -I -S .../azclaw/confine/launch.py``, started by
the runner. It reads the spec from standard input (its size on a line,
then ``marshal`` data: both ends are the same Python, and the json module
would cost every call 15 ms of imports), joins the
call's control groups, makes new namespaces, forks, and the child confines
itself (limits, no new privileges, no capabilities, Landlock, seccomp)
before it execs Python on the code: nothing runs between fork and exec in
the orchestrator's process, so this is safe with threads.

With a quota in the spec the launcher first mounts the call's view of the
output folder (``outfolder``: an overlay on a limited tmpfs, idmapped when
root so the child can run as an ordinary uid).

Standard error is the status channel to the runner, one line each::

    setup ns=pid,net,ipc,mnt cgroup=1 quota=1   (launcher)
    note <text>                          (launcher: something the tool result should say)
    confined landlock=7 seccomp=1 caps=1 uid=2147400000 rlimits=cpu,as,...   (child, just before exec)
    error <why>                          (child: it did not run the code)
    exit <code> | signal <number>        (launcher: the code's main process ended)
    stripped <path>                      (launcher: copied back without its setuid/setgid bit)
    output bytes=N files=N full=0|bytes|files copied=N removed=N stripped=N   (launcher, at the end)

After reporting the end the launcher waits for standard input to close, so
what the code left behind stays its descendant (it is a subreaper) until the
runner has killed it; then it reaps those, copies the upper layer back and
exits.
"""

from __future__ import annotations

import marshal
import os
import sys

if __package__:
    from . import landlock, oslimits, outfolder, seccomp
else:  # run as a script: the sibling modules, without importing all of azclaw
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import landlock  # noqa: E402
    import oslimits  # noqa: E402
    import outfolder  # noqa: E402
    import seccomp  # noqa: E402

SETUP_FAILED = 125


def _status(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _confine(spec: dict, uid) -> str:
    """In the child: apply everything; return the report line. ``uid``: the
    ordinary uid to run as (the launcher is root), or None."""
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
        ruleset, version = None, 0
        if spec.get("landlock", "required") == "required" or landlock.abi() > 0:  # paths opened as who we are
            ruleset, version = landlock.prepare(spec["read"] + [f"/proc/{own}"], spec["write"],
                                                listing=spec.get("listing", []))
        if uid is not None:
            oslimits.become(uid)
        caps = oslimits.drop_capabilities() or uid is not None
        if ruleset is not None:
            landlock.enforce(ruleset)
        seccomp.install()
        parts = [f"landlock={version}", "seccomp=1", f"caps={int(caps)}", f"uid={os.geteuid()}", *parts]
    return "confined " + " ".join(parts)


def _child(spec: dict, status: int, uid) -> None:
    try:
        report = _confine(spec, uid)
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
        view, note = _view(spec)  # first: it forks, and after a new PID namespace the first fork is its init
        wanted = spec.get("namespaces") or []
        names = oslimits.new_namespaces(net="net" in wanted) if "pid" in wanted else []
        try:
            oslimits.become_subreaper()
        except OSError:
            if spec.get("confine"):
                raise
        if view is not None and wanted:
            names.append("mnt")  # (under bubblewrap, its own mount namespace says it)
    except Exception as exc:  # noqa: BLE001 - reported, and the code does not run
        _status(status, f"error sandbox setup failed: {type(exc).__name__}: {exc}")
        os._exit(SETUP_FAILED)
    _status(status, f"setup ns={','.join(names)} cgroup={len(spec.get('cgroups', []))} quota={int(view is not None)}")
    if note:
        _status(status, f"note {note}")
    child = os.fork()
    if child == 0:
        own_status = os.dup(status)  # close-on-exec: the code never sees the channel
        _child(spec, own_status, view.uid if view is not None else None)
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
    if view is not None:
        try:
            _copy_back(view, status)
        except Exception as exc:  # noqa: BLE001 - said in the tool result
            _status(status, f"note the output was not copied back: {type(exc).__name__}: {exc}")
    os._exit(0)


def _view(spec: dict):
    """Mount the call's limited view of the output folder; (view, note) where
    view is None when the kernel or system refused one (the note says why)."""
    quota = spec.get("quota")
    if not quota:
        return None, ""
    try:
        reach = [spec["python"], *spec["read"], *spec["write"], *spec.get("listing", [])]
        view = outfolder.setup(spec["cwd"], quota["staging"], quota["homes"], quota["bytes"], quota["files"],
                               quota.get("uid"), reach, quota.get("sources", []))
    except OSError as exc:  # undone: the code writes the folder itself, as before quotas
        return None, f"no write quota for this call ({exc})"
    return view, view.note


def _copy_back(view, status: int) -> None:
    """Copy the upper layer into the real output folder, this process
    Landlock-confined to the two."""
    used, files, bytes_full, files_full = outfolder.usage(view)
    if landlock.abi() > 0:
        oslimits.no_new_privs()
        landlock.restrict([view.upper_fd], [view.real_fd])
    done = outfolder.copy_back(view)
    for path in done.stripped[:20]:
        _status(status, f"stripped {path}")
    for error in done.errors[:5]:
        _status(status, f"note not copied back: {error}")
    full = "bytes" if bytes_full else "files" if files_full else "0"
    _status(status, f"output bytes={used} files={files} full={full} copied={done.files} removed={done.removed} "
                    f"stripped={len(done.stripped)}")


if __name__ == "__main__":
    main()
