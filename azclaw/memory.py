"""Team memory kept as AgentAZAll text files.

Each agent has an AgentAZAll root (``agents/<name>/`` by default) holding a
``config.json``; its memories live at
``<mailbox_dir>/<agent_name>/<YYYY-MM-DD>/remember/<title>.txt``, exactly
where ``agentazall remember`` puts them, so ``AGENTAZALL_ROOT=agents/<name>
agentazall recall`` reads what the agent stored and the agent's ``recall``
finds what a person stored with the CLI. The files are the only truth.

``recall`` searches the whole team's memory; every hit says whose it is.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from .errors import ConfigError

REMEMBER = "remember"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}$")
_WORD = re.compile(r"[\w]+", re.UNICODE)
INDEX_ENTRIES = 25  # recall("") never lists more than this many memories
HIT_CHARS = 600


def sanitize_title(title: str) -> str:
    """The file name AgentAZAll gives a memory title."""
    return re.sub(r"[^\w\-.]", "_", title.strip())[:120].strip(".") or datetime.now().strftime("%H%M%S")


@dataclass
class Memory:
    """One memory file."""

    agent: str
    day: str
    title: str
    path: Path
    mtime: float

    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""


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
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{config_path}: not a readable AgentAZAll config ({exc})") from None
            if not isinstance(config, dict):
                raise ConfigError(f"{config_path}: expected a JSON object")
        else:
            config = {"agent_name": agent, "mailbox_dir": "./data/mailboxes"}
            root.mkdir(parents=True, exist_ok=True)
            config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        mailbox_dir = Path(config.get("mailbox_dir") or "./data/mailboxes")
        if not mailbox_dir.is_absolute():
            mailbox_dir = root / mailbox_dir
        return cls(agent, root, mailbox_dir / str(config.get("agent_name") or agent))


class TeamMemory:
    """Remember and recall over the AgentAZAll folders of a whole team."""

    def __init__(self, roots: dict[str, Path]):
        self.roots = {name: MemoryRoot.prepare(name, path) for name, path in roots.items()}
        self._lock = threading.Lock()

    def _root(self, agent: str) -> MemoryRoot:
        try:
            return self.roots[agent]
        except KeyError:
            raise ConfigError(f"unknown agent {agent!r}; team: {', '.join(self.roots)}") from None

    # -- writing ------------------------------------------------------------
    def remember(self, agent: str, text: str, title: str = "") -> Memory:
        """Store ``text`` under ``title`` for today; an existing memory of the
        same title and day gets the text appended, as AgentAZAll does."""
        root = self._root(agent)
        day = date.today().isoformat()
        folder = root.mailbox / day / REMEMBER
        path = folder / f"{sanitize_title(title)}.txt"
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            prefix = "\n" if path.exists() and path.stat().st_size else ""
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(prefix + text)
        return Memory(agent, day, path.stem, path, path.stat().st_mtime)

    # -- reading ------------------------------------------------------------
    def memories(self, agent: str | None = None) -> list[Memory]:
        """Every memory of the team (or of one agent), newest first."""
        found: list[Memory] = []
        for name, root in self.roots.items():
            if agent is not None and name != agent:
                continue
            if not root.mailbox.is_dir():
                continue
            for day_dir in root.mailbox.iterdir():
                folder = day_dir / REMEMBER
                if not _DAY.match(day_dir.name) or not folder.is_dir():
                    continue
                for path in folder.glob("*.txt"):
                    try:
                        mtime = path.stat().st_mtime
                    except OSError:
                        continue
                    found.append(Memory(name, day_dir.name, path.stem, path, mtime))
        found.sort(key=lambda m: (m.day, m.mtime), reverse=True)
        return found

    def counts(self) -> dict[str, int]:
        return {name: len(self.memories(name)) for name in self.roots}

    def search(self, query: str, agent: str | None = None, limit: int = 5) -> list[tuple[Memory, str]]:
        """Memories that contain the query's words, best first (title words
        count double, newer wins ties)."""
        words = [w.lower() for w in _WORD.findall(query)]
        scored = []
        for rank, memory in enumerate(self.memories(agent)):
            text = memory.text()
            body, title = text.lower(), memory.title.lower().replace("_", " ")
            score = sum(2 * (w in title) + (w in body) for w in words)
            if score:
                scored.append((-score, rank, memory, text))
        scored.sort(key=lambda s: (s[0], s[1]))
        return [(m, t) for _, _, m, t in scored[:limit]]

    def recall(self, query: str = "", agent: str | None = None, limit: int = 5) -> str:
        """What the recall tool shows: the index for an empty query, else the
        best hits with author, day and text."""
        if agent is not None:
            self._root(agent)
        if not query.strip():
            return self.index(agent)
        hits = self.search(query, agent, limit)
        if not hits:
            return f"No memories match {query!r}."
        lines = [f"{len(hits)} memories for {query!r}:"]
        for memory, text in hits:
            if len(text) > HIT_CHARS:
                text = text[:HIT_CHARS] + " [...]"
            lines.append(f"\n## {memory.title} (by {memory.agent}, {memory.day})\n{text}")
        return "\n".join(lines)

    def index(self, agent: str | None = None, limit: int = INDEX_ENTRIES) -> str:
        """A bounded list of the newest memories with counts per agent."""
        memories = self.memories(agent)
        counts: dict[str, int] = {}
        for m in memories:
            counts[m.agent] = counts.get(m.agent, 0) + 1
        if not memories:
            return "No memories stored yet."
        per_agent = ", ".join(f"{n}: {c}" for n, c in counts.items())
        lines = [f"{len(memories)} memories ({per_agent}). Newest first:"]
        for memory in memories[:limit]:
            first = next((ln.strip() for ln in memory.text().splitlines() if ln.strip()), "")
            lines.append(f"- [{memory.day}] {memory.title} (by {memory.agent}): {first[:80]}")
        if len(memories) > limit:
            lines.append(f"... {len(memories) - limit} older; recall(query) searches them all.")
        return "\n".join(lines)

