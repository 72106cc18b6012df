"""Landlock through raw system calls: a process limits the files it (and
every process it starts) may read and write, and, where the kernel's ABI has
them, its TCP ports, signals and abstract UNIX sockets.

Nothing here needs privileges; ``restrict`` needs PR_SET_NO_NEW_PRIVS first.
"""

from __future__ import annotations

import ctypes
import os
import stat

_SYS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_VERSION = 1  # LANDLOCK_CREATE_RULESET_VERSION
_PATH_BENEATH = 1  # LANDLOCK_RULE_PATH_BENEATH

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the only ones a file rule takes
READ = EXECUTE | READ_FILE | READ_DIR
WRITE = (READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
         | MAKE_SYM | REFER | TRUNCATE)


class LandlockError(OSError):
    """Landlock is missing or refused a step (the message says which)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _numbers() -> tuple[int, int, int]:
    machine = os.uname().machine.lower()
    if machine in ("amd64",):
        machine = "x86_64"
    if machine in ("arm64",):
        machine = "aarch64"
    if not os.uname().sysname == "Linux" or machine not in _SYS:
        raise LandlockError(0, f"Landlock needs Linux on x86_64 or aarch64, not {os.uname().sysname} "
                               f"{os.uname().machine}")
    return _SYS[machine]


def abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or off."""
    try:
        create, _, _ = _numbers()
    except LandlockError:
        return 0
    version = _libc().syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))
    return max(int(version), 0)


def fs_rights(version: int) -> int:
    return _FS_BY_ABI.get(version, _FS_BY_ABI[5])


def restrict(read: list, write: list, version: int | None = None, listing: list = ()) -> int:
    """Allow reading ``read`` and reading/writing ``write`` (files or folders,
    with everything beneath them; paths, or open descriptors), listing the
    folders of ``listing`` (names only), and nothing else of the file system; block
    TCP bind/connect (ABI 4+), signals and abstract UNIX sockets that leave the
    sandbox (ABI 6+). Paths that do not exist are skipped. Returns the ABI
    applied; raises LandlockError."""
    ruleset, version = prepare(read, write, version, listing)
    enforce(ruleset)
    return version


def prepare(read: list, write: list, version: int | None = None, listing: list = ()) -> tuple[int, int]:
    """The ruleset of ``restrict``, not yet applied: (descriptor, ABI). Its
    paths are opened now, with the rights we have now (a process about to
    leave root for an ordinary uid prepares first)."""
    create, add_rule, _ = _numbers()
    version = abi() if version is None else version
    if version < 1:
        raise LandlockError(0, "Landlock is not available in this kernel (or disabled at boot)")
    libc = _libc()
    handled = fs_rights(version)
    attr = _RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP if version >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if version >= 6 else 0)
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise LandlockError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for paths, rights in ((listing, READ_DIR), (read, READ), (write, WRITE)):
            for path in paths:
                _add_path(libc, add_rule, ruleset, path, rights & handled)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset, version


def enforce(ruleset: int) -> None:
    """Apply a prepared ruleset to this process (and all it starts) and close it."""
    _, _, restrict_self = _numbers()
    try:
        if _libc().syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)


def _add_path(libc, add_rule: int, ruleset: int, path, rights: int) -> None:
    if isinstance(path, int):
        fd = os.dup(path)
    else:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # not on this system: nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        if libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(_PATH_BENEATH), ctypes.byref(rule),
                        ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
