"""Opening and writing files below a folder without following a symbolic
link anywhere below it: each folder on the way is opened with O_NOFOLLOW
relative to the one before, so a path swapped for a link while we open it
fails instead of leading outside."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class Swapped(OSError):
    """A part of the path changed (became a link) while it was being opened."""


def _walk(root: Path, parts: tuple[str, ...], make: bool) -> int:
    """A descriptor of the folder ``root/parts``; makes missing folders with ``make``."""
    fd = os.open(root, _DIR)
    try:
        for part in parts:
            if make:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nxt = os.open(part, _DIR | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (40, 20):  # ELOOP, ENOTDIR: a link or a file where a folder was
                    raise Swapped(exc.errno, f"{part}: not a folder (changed while being opened?)") from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_beneath(root: Path, rel: Path, flags: int = os.O_RDONLY) -> int:
    """A descriptor of ``root/rel`` opened with ``flags``, no link followed."""
    parts = Path(rel).parts
    if not parts:
        return os.open(root, _DIR)
    fd = _walk(root, parts[:-1], make=False)
    try:
        return os.open(parts[-1], flags | _NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError as exc:
        if exc.errno == 40:
            raise Swapped(exc.errno, f"{parts[-1]}: is a symbolic link (changed while being opened?)") from None
        raise
    finally:
        os.close(fd)


def write_beneath(root: Path, rel: Path, text: str) -> None:
    """Write ``root/rel`` atomically (temporary file, fsync, rename inside
    the same folder descriptor), making missing folders; no link followed."""
    parts = Path(rel).parts
    fd = _walk(root, parts[:-1], make=True)
    tmp = f".{parts[-1][:100]}.{secrets.token_hex(4)}.tmp"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            with os.fdopen(out, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
            raise
        try:
            os.fsync(fd)
        except OSError:
            pass
    finally:
        os.close(fd)
