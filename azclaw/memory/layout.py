"""The AgentAZAll on-disk layout, known here and nowhere else.

An agent's AgentAZAll root holds ``config.json`` (``agent_name``,
``mailbox_dir``); its memories live at
``<mailbox_dir>/<agent_name>/<YYYY-MM-DD>/remember/<title>.txt``, with
AgentAZAll's own ``remember_index.txt`` beside the day folders. Titles become
file names as ``agentazall.helpers.sanitize`` makes them, so azclaw and
``agentazall remember`` append to the same file. azclaw's search index is a
derived cache in ``.azclaw/memory-index.sqlite3`` beside the agents' roots.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import ConfigError

REMEMBER = "remember"  # the folder of one day's memories
REMEMBER_INDEX = "remember_index.txt"  # AgentAZAll's listing, beside the day folders
SUFFIX = ".txt"
MAX_NAME_BYTES = 255 - len(SUFFIX)  # NAME_MAX of Linux and macOS file systems
INDEX_FILE = Path(".azclaw") / "memory-index.sqlite3"
DEFAULT_MAILBOX_DIR = "./data/mailboxes"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # a day folder, as AgentAZAll names them


def sanitize_title(title: str) -> str:
    """The file name AgentAZAll gives a memory title (``agentazall.helpers.
    sanitize``: every character but letters, digits, ``_-.`` becomes ``_``;
    empty means the time of day), so both append to the same file. Only a
    name too long for a file name is cut, where AgentAZAll would fail."""
    if not title:
        return datetime.now().strftime("%H%M%S")
    name = re.sub(r"[^\w\-.]", "_", title)
    return name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore")


def is_day(name: str) -> bool:
    """True for the name of a day folder (``YYYY-MM-DD``)."""
    return bool(_DAY.fullmatch(name))


def is_memory_file(name: str) -> bool:
    return name.endswith(SUFFIX)


def memory_name(file_name: str) -> str:
    """The stored name (sanitised title) of a memory file."""
    return file_name[: -len(SUFFIX)]


def remember_dir(mailbox: str | Path, day: str) -> str:
    """The folder of one day's memories in a mailbox."""
    return os.path.join(mailbox, day, REMEMBER)


def memory_path(mailbox: str | Path, day: str, name: str) -> str:
    """The file of memory ``name`` (a sanitised title) of ``day``."""
    return os.path.join(mailbox, day, REMEMBER, name + SUFFIX)


def day_folders(mailbox: str | Path) -> list[str]:
    """The day folders of a mailbox (unsorted); none when it does not exist."""
    try:
        with os.scandir(mailbox) as entries:
            return [e.name for e in entries if is_day(e.name) and e.is_dir()]
    except OSError:
        return []


@dataclass
class MemoryRoot:
    """Where one agent's memories live, read from its AgentAZAll config."""

    agent: str
    root: Path
    mailbox: Path  # <mailbox_dir>/<agent_name>

    @classmethod
    def prepare(cls, agent: str, root: Path) -> "MemoryRoot":
        """Use ``root/config.json`` if it exists, otherwise write one that
        names the agent, so the agentazall CLI finds the same folders."""
        root = Path(root)
        config_path = root / "config.json"
        if config_path.exists():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise ConfigError(f"{config_path}: not a readable AgentAZAll config ({exc})") from None
            if not isinstance(config, dict):
                raise ConfigError(f"{config_path}: expected a JSON object")
        else:
            config = {"agent_name": agent, "mailbox_dir": DEFAULT_MAILBOX_DIR}
            root.mkdir(parents=True, exist_ok=True)
            config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        mailbox_dir = Path(str(config.get("mailbox_dir") or DEFAULT_MAILBOX_DIR))
        if not mailbox_dir.is_absolute():
            mailbox_dir = root / mailbox_dir
        return cls(agent, root, mailbox_dir / str(config.get("agent_name") or agent))

    def memory_path(self, day: str, name: str) -> Path:
        return Path(memory_path(self.mailbox, day, name))


def agent_folders(agents_dir: str | Path) -> list[str]:
    """The agents whose AgentAZAll roots are folders of ``agents_dir`` (they hold a config.json)."""
    folder = Path(agents_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def default_index_path(roots: dict[str, MemoryRoot]) -> Path:
    """``.azclaw/memory-index.sqlite3`` in the folder holding the agents'
    roots (``agents/``), or a per-team file under ~/.cache when the roots
    share no folder but ``/``."""
    folders = [str(r.root.absolute().parent) for r in roots.values()]
    base = Path(os.path.commonpath(folders)) if folders else Path.cwd()
    if base != Path(base.anchor):
        return base / INDEX_FILE
    team = hashlib.sha256("\n".join(sorted(str(r.mailbox.absolute()) for r in roots.values())).encode())
    return Path.home() / ".cache" / "azclaw" / f"memory-{team.hexdigest()[:16]}.sqlite3"
