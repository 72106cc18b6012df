"""Run files: written so that a kill at any instant leaves the old or the
new content, never half of one; read only when they are regular files, and
never more than a bound (``read_regular``), so that a named pipe cannot hang
a run and a link to ``/dev/zero`` cannot fill its memory."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, TextIO

from .errors import AzclawError, RunLocked, StorageError

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")  # what mkstemp names write_atomic's files


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Temporary file beside ``path``, fsync, rename, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide a checkpoint or a written file from the group
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def sweep_temporary(folder: Path, names: list[str]) -> list[Path]:
    """Remove what writers of ``names`` that were killed mid-write left in
    ``folder`` (the temporary files of ``write_atomic``); returns them."""
    swept = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return swept
    for entry in entries:
        found = _TEMPORARY.fullmatch(entry.name)
        if found and found["name"] in names and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                swept.append(Path(entry.path))
            except OSError:
                pass
    return swept


MB = 1024 * 1024
JSON_LIMIT = 256 * MB  # a checkpoint of a long run in full context mode stays far below


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | Path, what: str, error: type[AzclawError] = StorageError,
                 follow: bool = True) -> BinaryIO:
    """``path`` opened for reading in binary, when it is a regular file; else
    one ``error`` that names the file and ``what`` it should have been:
    missing, unreadable, a folder, a named pipe (opened without blocking, so
    it cannot hang the reader; reads from the file returned do block as
    usual), a device such as ``/dev/zero`` (never read) or a socket.
    ``follow=False`` refuses a symbolic link as the last part of the path.
    For a file read in pieces (a journal); bound what you read of it."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise error(f"{path}: is a symbolic link, not a {what}") from None
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    return _regular(fd, path, what, error, "", "rb")


def open_append(path: str | Path, what: str, error: type[AzclawError] = StorageError) -> TextIO:
    """``path`` opened to append UTF-8 text (created if missing), when it is a
    regular file of its own: a symbolic link (whose target would get the
    lines), a named pipe (which would block the writer until a reader came),
    a folder or a device is one ``error`` naming the file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path}: is a symbolic link, not a {what} of its own; remove it") from None
        if exc.errno == errno.ENXIO:  # a named pipe nobody reads
            raise error(f"{path}: is a named pipe (FIFO), not a {what}; remove it") from None
        raise error(f"{path}: cannot write the {what} ({exc.strerror})") from None
    return _regular(fd, path, what, error, "; remove it", "a", encoding="utf-8", errors="replace")


def _regular(fd: int, path: Path, what: str, error: type[AzclawError], hint: str, *mode, **text):
    """``fd`` as a file object when it is a regular file (blocking again), else
    closed and one ``error`` naming what it is."""
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise error(f"{path}: is {_kind(kind)}, not a {what}{hint}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, *mode, **text)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, what: str, limit: int, error: type[AzclawError] = StorageError,
                 follow: bool = True) -> bytes:
    """The bytes of ``path``, which must be a regular file (``open_regular``)
    of at most ``limit`` bytes: at most ``limit + 1`` bytes are ever read, and
    a larger file is one ``error`` naming it."""
    chunks, size = [], 0
    with open_regular(path, what, error, follow) as fh:
        try:
            while size <= limit:  # in pieces: a bound of 256 MB must not cost 256 MB for a small file
                chunk = fh.read(min(limit + 1 - size, MB))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise error(f"{Path(path)}: cannot read {what} ({exc.strerror})") from None
    if size > limit:
        raise error(f"{Path(path)}: {what} is larger than {limit:,} bytes, more than azclaw reads")
    return b"".join(chunks)


def read_json(path: Path, what: str, error: type[AzclawError], limit: int = JSON_LIMIT) -> object:
    """Parse the JSON file ``path`` (a regular file, read with ``read_regular``);
    every failure is one ``error`` line that names the file and ``what`` it
    should have been."""
    path = Path(path)
    try:
        text = read_regular(path, what, limit, error).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{path}: {what} is nested too deeply to read") from None
    except ValueError as exc:
        raise error(f"{path}: {what} is truncated or not JSON (line {exc.lineno} column {exc.colno}: "
                    f"{exc.msg})") from None


class RunLock:
    """One live run per lock file: an exclusive ``flock`` held for the run,
    with the holder's pid in the file. The kernel drops the lock when the
    process ends, however it ends, so a dead run's lock is simply taken over."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        try:  # never through a link (the pid written would land in its target), never blocking on a pipe
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            what = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot create it ({exc.strerror})"
            raise StorageError(f"{self.path}: {what}; the run's lock must be a file of its own") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise StorageError(f"{self.path}: is {_kind(mode)}, not the run's lock file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RunLocked(f"another azclaw run (pid {holder}) is running {self.what} with this log folder "
                            f"({self.path.parent}); wait for it, stop it with azclaw stop, or use another "
                            "--log-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
