"""Process-level limits through prctl, capset, unshare and setrlimit: the
small Linux calls the launcher makes before it runs model-written code, and
the one the orchestrator makes to protect itself. The launcher imports this,
so it stays light: no dataclasses, no signal or platform module."""

from __future__ import annotations

import ctypes
import os
import resource

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_CAP_AMBIENT = 28, 38, 36, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_SECUREBITS_LOCKED_NOROOT = 0x2F  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS off, each one locked
_CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    libc = _libc()
    if not hasattr(libc, "prctl"):
        raise OSError(38, "prctl is Linux only")
    if libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def protect_process() -> bool:
    """PR_SET_DUMPABLE 0: processes of the same user can no longer read this
    process's /proc/<pid>/environ, cmdline-adjacent memory (mem) or attach a
    debugger. True when applied (Linux only)."""
    try:
        _prctl(PR_SET_DUMPABLE, 0)
        return True
    except OSError:
        return False


def no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, 9)  # SIGKILL (the signal module costs the launcher 10 ms)


def become_subreaper() -> None:
    """Orphaned descendants (a double fork, setsid) become our children, not
    init's, so they stay findable under us until we kill them."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def drop_capabilities() -> bool:
    """Drop every capability, also for a later exec (bounding set, ambient,
    inheritable, and securebits NOROOT so uid 0 gains nothing from exec).
    Root stays uid 0 but without CAP_DAC_OVERRIDE, CAP_KILL, CAP_SYS_ADMIN ...
    True when this process had capabilities to drop."""
    libc = _libc()
    had = _has_capabilities()
    if had:
        try:
            _prctl(PR_SET_SECUREBITS, _SECUREBITS_LOCKED_NOROOT)
        except OSError:
            pass  # without CAP_SETPCAP: the bounding set below still holds
        for cap in range(_last_cap() + 1):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
                err = ctypes.get_errno()
                raise OSError(err, f"PR_CAPBSET_DROP {cap}: {os.strerror(err)}")
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable, twice: all zero
    if libc.syscall(ctypes.c_long(_CAPSET), header, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    return had


def become(uid: int) -> None:
    """As root: leave root for ``uid`` (its group the same number), with no
    supplementary groups, and drop the bounding set first (after the uid
    change we could no longer). Capabilities go with uid 0."""
    libc = _libc()
    for cap in range(_last_cap() + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            err = ctypes.get_errno()
            raise OSError(err, f"PR_CAPBSET_DROP {cap}: {os.strerror(err)}")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


_CAPSET = 126 if os.uname().machine in ("x86_64", "amd64") else 91


def _has_capabilities() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(("CapEff:", "CapPrm:")) and int(line.split()[1], 16):
                    return True
    except OSError:
        return os.geteuid() == 0
    return False


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 63


def unshare(flags: int) -> None:
    libc = _libc()
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def new_namespaces(net: bool = True) -> list[str]:
    """Move the next child into a new PID namespace (when its init ends the
    kernel kills everything in it) and, with ``net``, new network and IPC
    namespaces. Directly where we may (root, or already in a user namespace
    of our own); otherwise inside a new user namespace mapped to our own
    uid. Returns the names applied; [] when the kernel or the system's
    policy refuses."""
    uid, gid = os.geteuid(), os.getegid()
    tries = [(CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC, ["pid", "net", "ipc"])] if net else []
    for flags, names in tries + [(CLONE_NEWPID, ["pid"])]:
        for user in (0, CLONE_NEWUSER) if uid != 0 else (0,):
            try:
                unshare(flags | user)
            except OSError:
                continue
            if user:
                _write("/proc/self/setgroups", "deny")  # a failure here is raised: we are in the
                _write("/proc/self/uid_map", f"{uid} {uid} 1")  # new namespace already, as nobody
                _write("/proc/self/gid_map", f"{gid} {gid} 1")
            return ["user", *names] if user else names
    return []


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def user_process_count() -> int:
    """Processes of this real uid (what RLIMIT_NPROC counts)."""
    uid, count = os.getuid(), 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def apply_rlimits(limits: dict, nproc: int | None) -> list[str]:
    """Set the limits (``Limits`` fields) on this process and what it starts;
    return the names applied. ``nproc``: the RLIMIT_NPROC value, or None."""
    applied = []
    wanted = [("cpu", resource.RLIMIT_CPU, limits["cpu_seconds"]), ("as", resource.RLIMIT_AS, limits["memory_bytes"]),
              ("fsize", resource.RLIMIT_FSIZE, limits["file_bytes"]), ("core", resource.RLIMIT_CORE, 0),
              ("nofile", resource.RLIMIT_NOFILE, limits["open_files"])]
    if nproc is not None:
        wanted.append(("nproc", resource.RLIMIT_NPROC, nproc))
    for name, which, value in wanted:
        try:
            soft, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
            applied.append(name)
        except (ValueError, OSError):
            pass
    return applied
