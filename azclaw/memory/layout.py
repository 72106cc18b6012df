"""The AgentAZAll on-disk layout, known here and nowhere else.

An agent's AgentAZAll root holds ``config.json`` (``agent_name``,
``mailbox_dir``); its memories live at
``<mailbox_dir>/<agent_name>/<YYYY-MM-DD>/remember/<title>.txt``, with
AgentAZAll's own ``remember_index.txt`` beside the day folders. Titles become
file names as ``agentazall.helpers.sanitize`` makes them, so azclaw and
``agentazall remember`` append to the same file. azclaw's search index is a
derived cache in ``.azclaw/memory-index.sqlite3`` beside the agents' roots.

What azclaw writes inside the files (the files are the only truth):

* A memory file is a list of entries. Each ``remember`` appends its text and,
  on the line after it, a trailer naming who stored it, the round and the
  time, and how many lines above are its text::

      The API server listens on port 7070.
      [stored by developer in round 12, 2026-11-21 15:10:44; the 1 line above]

  Text without a trailer (``agentazall remember``, a person's editor) is an
  entry of its own, stored outside a run. An empty title is the time of day,
  as AgentAZAll names it (``151044``), or ``151044-2`` when that is taken.
* Each round's messages: the message an agent gave in round N is the
  AgentAZAll note ``<YYYY-MM-DD>/notes/round-NNNN.txt`` of its mailbox
  (``agentazall note round-0003`` prints it; ``agentazall recall`` lists only
  memories, so it never shows them), a header line then the message::

      [message of architect in round 3, 2026-11-21 14:03:07]
      We use port 7070 for the API server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..files import read_regular

REMEMBER = "remember"  # the folder of one day's memories
REMEMBER_INDEX = "remember_index.txt"  # AgentAZAll's listing, beside the day folders
SUFFIX = ".txt"
MAX_NAME_BYTES = 255 - len(SUFFIX)  # NAME_MAX of Linux and macOS file systems
INDEX_FILE = Path(".azclaw") / "memory-index.sqlite3"
DEFAULT_MAILBOX_DIR = "./data/mailboxes"
NOTES = "notes"  # AgentAZAll's folder of an agent's named notes: azclaw keeps the rounds' messages there
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # a day folder, as AgentAZAll names them
_UNTITLED = re.compile(r"[0-9]{6}(-[0-9]+)?")  # the time of day AgentAZAll names an untitled memory by
_ROUND_FILE = re.compile(r"round-([0-9]+)\.txt")
WHEN = "%Y-%m-%d %H:%M:%S"
_WHEN = r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}"
TRAILER = re.compile(r"\[stored by (?P<agent>[^\[\],;\n]+?)(?: in round (?P<round>[0-9]{1,9}))?, "
                     rf"(?P<when>{_WHEN}); the (?P<lines>[0-9]{{1,7}}) lines? above\]")
MESSAGE_HEADER = re.compile(rf"\[message of (?P<agent>[^\[\],;\n]+?) in round (?P<round>[0-9]{{1,9}}), "
                            rf"(?P<when>{_WHEN})\]")


def sanitize_title(title: str, now: datetime | None = None) -> str:
    """The file name AgentAZAll gives a memory title (``agentazall.helpers.
    sanitize``: every character but letters, digits, ``_-.`` becomes ``_``;
    empty means the time of day), so both append to the same file. Only a
    name too long for a file name is cut, where AgentAZAll would fail."""
    if not title:
        return (now or datetime.now()).strftime("%H%M%S")
    name = re.sub(r"[^\w\-.]", "_", title)
    return name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore")


def is_untitled(name: str) -> bool:
    """True for the name of a memory stored without a title (a time of day)."""
    return bool(_UNTITLED.fullmatch(name))


def is_day(name: str) -> bool:
    """True for the name of a day folder (``YYYY-MM-DD``)."""
    return bool(_DAY.fullmatch(name))


def memory_name(file_name: str) -> str:
    """The stored name (sanitised title) of a memory file."""
    return file_name[: -len(SUFFIX)]


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


# -- the entries of a memory file ------------------------------------------------------
@dataclass(frozen=True)
class MemoryEntry:
    """One entry of a memory file: its text and, when azclaw stored it, who,
    in which round (None outside a run) and when; ``agent`` is None for text
    without a trailer (stored by a person or the agentazall CLI)."""

    text: str
    agent: str | None = None
    round: int | None = None
    when: datetime | None = None


def format_entry(text: str, agent: str, round_no: int | None, when: datetime) -> str:
    """``text`` and its trailer, as ``remember`` appends them. A line of the
    text that would read as a trailer gets a ``(`` for its ``[``."""
    lines = [("(" + ln[1:] if TRAILER.fullmatch(ln.rstrip()) else ln)
             for ln in text.strip("\n").rstrip().split("\n")]
    where = f" in round {round_no}" if round_no else ""
    count = f"the {len(lines)} line above" if len(lines) == 1 else f"the {len(lines)} lines above"
    return "\n".join(lines) + f"\n[stored by {_signer(agent)}{where}, {when.strftime(WHEN)}; {count}]"


def _signer(agent: str) -> str:
    """An agent's name as a trailer or header can hold it."""
    return re.sub(r"[\[\],;\s]", "_", agent) or "_"


def parse_entries(content: str) -> list[MemoryEntry]:
    """The entries of a memory file, oldest first. Lines above a trailer
    beyond its count, and lines after the last trailer, are entries without
    one; blank entries are left out."""
    if "[stored by " not in content:
        text = content.strip()
        return [MemoryEntry(text)] if text else []
    lines, found, start = content.split("\n"), [], 0
    for i, line in enumerate(lines):
        if not line.startswith("[stored by "):
            continue
        match = TRAILER.fullmatch(line.rstrip())
        if match is None:
            continue
        first = max(start, i - int(match["lines"]))
        _add(found, lines[start:first])
        when = _when(match["when"])
        _add(found, lines[first:i], match["agent"], int(match["round"]) if match["round"] else None, when)
        start = i + 1
    _add(found, lines[start:])
    return found


def _add(found: list, lines: list[str], agent=None, round_no=None, when=None) -> None:
    text = "\n".join(lines).strip()
    if text:
        found.append(MemoryEntry(text, agent, round_no, when))


def _when(text: str) -> datetime | None:
    """``WHEN`` read back (the pattern has checked the digits; strptime is slow)."""
    try:
        return datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                        int(text[17:19]))
    except ValueError:
        return None


def without_trailers(content: str) -> str:
    """A memory file's text as the search index holds it: no trailers."""
    if "[stored by " not in content:
        return content
    return "\n".join(ln for ln in content.split("\n") if not TRAILER.fullmatch(ln.rstrip()))


# -- the rounds' messages ------------------------------------------------------------------
def round_name(round_no: int) -> str:
    """The note (file stem) holding an agent's message of a round."""
    return f"round-{round_no:04d}"


def round_of(name: str) -> int:
    """The round of a round note's file stem (0 when it is none)."""
    match = _ROUND_FILE.fullmatch(name + SUFFIX)
    return int(match[1]) if match else 0


def format_message(agent: str, round_no: int, when: datetime, text: str) -> str:
    return f"[message of {_signer(agent)} in round {round_no}, {when.strftime(WHEN)}]\n{text.strip()}\n"


def parse_message(content: str) -> MemoryEntry:
    """A round note: its message and, from its header, author, round and time."""
    first, _, rest = content.partition("\n")
    match = MESSAGE_HEADER.fullmatch(first.rstrip())
    if match is None:
        return MemoryEntry(content.strip())
    return MemoryEntry(rest.strip(), match["agent"], int(match["round"]), _when(match["when"]))


def without_header(content: str) -> str:
    """A round note's text as the search index holds it: no header."""
    first, _, rest = content.partition("\n")
    return rest if MESSAGE_HEADER.fullmatch(first.rstrip()) else content


# -- shelves: which files of a day folder an index holds ---------------------------------------
@dataclass(frozen=True)
class Shelf:
    """One kind of file in the day folders: the folder, which of its files
    count, and the text of a file that the search index holds."""

    folder: str
    searchable: Callable[[str], str]
    pattern: re.Pattern | None = None  # None: every ``*.txt``

    def dir(self, mailbox: str | Path, day: str) -> str:
        return os.path.join(mailbox, day, self.folder)

    def path(self, mailbox: str | Path, day: str, name: str) -> str:
        return os.path.join(mailbox, day, self.folder, name + SUFFIX)

    def holds(self, file_name: str) -> bool:
        if self.pattern is not None:
            return bool(self.pattern.fullmatch(file_name))
        return file_name.endswith(SUFFIX)


MEMORIES = Shelf(REMEMBER, without_trailers)
MESSAGES = Shelf(NOTES, without_header, _ROUND_FILE)


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
            try:  # a regular file of at most 1 MB: a pipe or /dev/zero in its place is one error line
                config = json.loads(read_regular(config_path, "AgentAZAll config", 1 << 20, ConfigError))
            except (ValueError, RecursionError) as exc:
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

    def message_path(self, day: str, round_no: int) -> Path:
        return Path(MESSAGES.path(self.mailbox, day, round_name(round_no)))


def agent_folders(agents_dir: str | Path) -> list[str]:
    """The agents whose AgentAZAll roots are folders of ``agents_dir`` (they hold a config.json)."""
    folder = Path(agents_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def messages_index_path(index_path: str) -> str:
    """The cache of the rounds' messages, beside the memories' cache."""
    if index_path == ":memory:":
        return index_path
    path = Path(index_path)
    if path.name == INDEX_FILE.name:
        return str(path.with_name("message-index.sqlite3"))
    return str(path.with_name(path.stem + "-messages" + path.suffix))


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
