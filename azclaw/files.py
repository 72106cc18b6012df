"""Writing files so that a kill at any instant leaves the old or the new
content, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import AzclawError


def write_atomic(path: Path, text: str) -> None:
    """Temporary file beside ``path``, fsync, rename, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
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


def read_json(path: Path, what: str, error: type[AzclawError]) -> object:
    """Parse the JSON file ``path``; every failure is one ``error`` line that
    names the file and ``what`` it should have been."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise error(f"{path}: {what} is truncated or not JSON (line {exc.lineno} column {exc.colno}: "
                    f"{exc.msg})") from None
