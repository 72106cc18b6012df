"""A seccomp BPF filter, built by hand: no network sockets, no new
namespaces, no io_uring, no kernel-level tricks.

* ``socket()`` fails with EPERM for every family, UNIX included: Landlock
  (up to ABI 7) does not check ``connect()`` to a named UNIX socket, and
  ``/var/run/docker.sock`` or the D-Bus system bus would be a way out.
  ``socketpair(AF_UNIX, SOCK_STREAM or SOCK_SEQPACKET)`` stays allowed: asyncio
  and ``multiprocessing.Pipe`` need it, and it reaches nothing outside.
* ``unshare``, ``setns``, ``clone`` with a namespace flag, the mount API,
  ``ptrace``, ``process_vm_*``, ``bpf``, ``perf_event_open``, ``userfaultfd``,
  ``keyctl``, module loading, ``kexec``, ``reboot`` ... fail with EPERM;
  ``clone3`` fails with ENOSYS so the C library falls back to ``clone``, whose
  flags the filter can see. io_uring would open sockets behind the filter's back.
* No setuid or setgid file: ``chmod``, ``fchmod``, ``fchmodat``, ``fchmodat2``
  and the creating calls (``open``, ``openat``, ``creat``, ``mknod``,
  ``mknodat``) fail with EPERM when their mode has S_ISUID or S_ISGID. Code
  running as root owns what it makes; a root-owned setuid shell left in the
  output folder would be a root shell for any local user. ``openat2`` (its
  mode is in a struct the filter cannot read) fails with ENOSYS: the C
  library falls back to ``openat``.
* A system call made through another ABI (32-bit ``int 0x80``, x32) fails:
  the filter checks the architecture first.
"""

from __future__ import annotations

import ctypes
import errno
import os

_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*
_X32_BIT = 0x40000000

# name: (x86_64, aarch64)
_SYSCALLS = {
    "socket": (41, 198), "socketpair": (53, 199), "clone": (56, 220), "clone3": (435, 435),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "unshare": (272, 97), "setns": (308, 268), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142),
    "swapon": (167, 224), "swapoff": (168, 225), "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264), "acct": (163, 89), "syslog": (103, 116),
    "settimeofday": (164, 170), "clock_settime": (227, 112), "sethostname": (170, 161),
    "setdomainname": (171, 162), "quotactl": (179, 60), "vhangup": (153, 58), "openat2": (437, 437),
}
# calls whose mode argument may carry S_ISUID/S_ISGID: name: ((x86_64, aarch64) numbers, mode argument);
# -1: the call does not exist on that architecture (aarch64 has only the *at forms)
_MODE_CALLS = {"chmod": ((90, -1), 1), "fchmod": ((91, 52), 1), "fchmodat": ((268, 53), 2),
               "fchmodat2": ((452, 452), 2), "open": ((2, -1), 2), "openat": ((257, 56), 3),
               "creat": ((85, -1), 1), "mknod": ((133, -1), 1), "mknodat": ((259, 33), 2)}
_PRIVILEGED_MODE = 0o6000  # S_ISUID | S_ISGID
_ENOSYS_CALLS = ("clone3", "openat2")
DENIED = [n for n in _SYSCALLS if n not in ("socket", "socketpair", "clone", *_ENOSYS_CALLS)]
_CLONE_NAMESPACES = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_AF_UNIX = 1
_SOCK_TYPE_MASK = 0xF
_PAIR_TYPES = (1, 5)  # SOCK_STREAM, SOCK_SEQPACKET

_LD_W_ABS, _JEQ, _JGE, _JSET, _AND, _RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_NR, _ARCH_OFF = 0, 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


def _arg(n: int) -> int:
    return 16 + 8 * n  # low 32 bits of args[n] (little-endian)


class SeccompError(OSError):
    """The filter could not be installed (the message says why)."""


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def machine() -> str:
    name = os.uname().machine.lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def build(arch: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter program as (code, jt, jf, k) instructions for ``arch``."""
    arch = arch or machine()
    if arch not in _ARCH:
        raise SeccompError(0, f"no seccomp filter for {arch}; x86_64 and aarch64 have one")
    idx = 0 if arch == "x86_64" else 1
    nr = {name: pair[idx] for name, pair in _SYSCALLS.items()}
    deny, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    prog = [(_LD_W_ABS, 0, 0, _ARCH_OFF), (_JEQ, 1, 0, _ARCH[arch]), (_RET, 0, 0, deny),
            (_LD_W_ABS, 0, 0, _NR)]
    if arch == "x86_64":
        prog += [(_JGE, 0, 1, _X32_BIT), (_RET, 0, 0, deny)]
    prog += [(_JEQ, 0, 1, nr["socket"]), (_RET, 0, 0, deny)]
    prog += [(_JEQ, 0, 8, nr["socketpair"]),
             (_LD_W_ABS, 0, 0, _arg(0)), (_JEQ, 0, 4, _AF_UNIX),  # another family: deny
             (_LD_W_ABS, 0, 0, _arg(1)), (_AND, 0, 0, _SOCK_TYPE_MASK),
             (_JEQ, 2, 0, _PAIR_TYPES[0]), (_JEQ, 1, 0, _PAIR_TYPES[1]),
             (_RET, 0, 0, deny), (_RET, 0, 0, _ALLOW)]
    for name in _ENOSYS_CALLS:
        prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, enosys)]
    for name, (numbers, arg) in _MODE_CALLS.items():
        if numbers[idx] >= 0:
            prog += [(_JEQ, 0, 4, numbers[idx]), (_LD_W_ABS, 0, 0, _arg(arg)),
                     (_JSET, 0, 1, _PRIVILEGED_MODE), (_RET, 0, 0, deny), (_LD_W_ABS, 0, 0, _NR)]
    prog += [(_JEQ, 0, 4, nr["clone"]), (_LD_W_ABS, 0, 0, _arg(0)),
             (_JSET, 0, 1, _CLONE_NAMESPACES), (_RET, 0, 0, deny), (_LD_W_ABS, 0, 0, _NR)]
    for name in DENIED:
        prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, deny)]
    prog.append((_RET, 0, 0, _ALLOW))
    return prog


def install(arch: str | None = None) -> None:
    """Install the filter on this process (and all it starts); needs
    PR_SET_NO_NEW_PRIVS first. Raises SeccompError."""
    program = build(arch)
    array = (_Filter * len(program))(*[_Filter(*ins) for ins in program])
    prog = _Prog(len(program), array)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"seccomp filter refused: {os.strerror(err)}")
