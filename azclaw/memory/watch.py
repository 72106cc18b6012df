"""Linux inotify through ctypes: which memory folders and files changed.

Only an accelerator: without it (another OS, no watches left) the memory
index stats its folders on every refresh instead. A watch reports every
file created, written, renamed or deleted in a folder, by any process, so
a refresh need not list a folder of 50,000 memories to find the new one.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from typing import Hashable

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
LOST = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED  # the watch no longer means its path
_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
         | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")
_libc = None


def _load_libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
            getattr(_libc, name)  # AttributeError when this libc has no inotify
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return _libc


class Watcher:
    """One inotify instance; each watched folder has a caller's key.

    Raises OSError when inotify is not available here."""

    def __init__(self):
        if not sys.platform.startswith("linux"):
            raise OSError("inotify needs Linux")
        try:
            libc = _load_libc()
        except (OSError, AttributeError) as exc:
            raise OSError(f"no inotify in libc: {exc}") from None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._libc, self.fd, self.pid = libc, fd, os.getpid()
        self._keys: dict[int, Hashable] = {}  # watch descriptor -> key
        self._wds: dict[Hashable, int] = {}

    def add(self, path: str, key: Hashable) -> bool:
        """Watch the folder ``path`` under ``key``; False if that failed
        (no such folder, or no watches left): poll it instead."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
        if wd < 0:
            self.remove(key)
            return False
        if self._wds.get(key, wd) != wd:  # the key's folder was replaced: drop the old watch
            self.remove(key)
        other = self._keys.get(wd)
        if other is not None and other != key:  # the same folder under another name
            self._wds.pop(other, None)
        self._keys[wd], self._wds[key] = key, wd
        return True

    def remove(self, key: Hashable) -> None:
        wd = self._wds.pop(key, None)
        if wd is not None:
            self._keys.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> tuple[bool, list[tuple[Hashable, int, str]]]:
        """Events since the last read, without waiting: (overflowed, [(key,
        mask, name)]). After an overflow events were lost: rescan everything."""
        overflow, events = False, []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size: offset + _EVENT.size + size]
                offset += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                key = self._keys.get(wd)
                if key is None:
                    continue
                if mask & IN_IGNORED:  # the kernel dropped the watch (folder gone)
                    self._keys.pop(wd, None)
                    if self._wds.get(key) == wd:
                        del self._wds[key]
                events.append((key, mask, os.fsdecode(raw.rstrip(b"\0"))))
        return overflow, events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self._keys.clear()
            self._wds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
