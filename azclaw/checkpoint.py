"""Checkpoints: the state a run needs to go on after it stopped.

Format (version 1), one JSON object::

    {
      "format": "azclaw-checkpoint", "version": 1,
      "topic": {"name": str, "title": str},
      "round": int,                # last completed round
      "max_rounds": int,           # the last round the run was asked for
      "saved_at": "ISO-8601 time",
      "stats": RunStats.to_dict(),
      "memory_counts": {agent: int},
      "written_files": [str],      # distinct output files the team wrote
      "history": [{"round", "agent", "text"}],   # the last 100 messages
      "probe_answers": [{"round", "agent", "question", "answer", "correct"}]
    }

Writes go to a temporary file that is flushed, fsynced and renamed over the
old checkpoint, so a kill at any instant leaves a whole checkpoint behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import CheckpointError
from .files import read_json, write_atomic
from .prompt import Message
from .stats import RunStats

FORMAT = "azclaw-checkpoint"
VERSION = 1
HISTORY_KEEP = 100


@dataclass
class Checkpoint:
    """A run's state after a completed round."""

    topic_name: str
    topic_title: str
    round: int
    max_rounds: int
    stats: RunStats
    memory_counts: dict[str, int] = field(default_factory=dict)
    written_files: list[str] = field(default_factory=list)
    history: list[Message] = field(default_factory=list)
    probe_answers: list[dict] = field(default_factory=list)
    saved_at: str = ""

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION,
            "topic": {"name": self.topic_name, "title": self.topic_title},
            "round": self.round, "max_rounds": self.max_rounds,
            "saved_at": self.saved_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stats": self.stats.to_dict(),
            "memory_counts": dict(self.memory_counts),
            "written_files": sorted(self.written_files),
            "history": [m.to_dict() for m in self.history[-HISTORY_KEEP:]],
            "probe_answers": list(self.probe_answers),
        }

    @classmethod
    def from_dict(cls, data: object, source: str) -> "Checkpoint":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not an azclaw checkpoint")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(f"{source}: checkpoint version {version!r} is newer than this "
                                  f"azclaw understands ({VERSION}); upgrade azclaw")
        try:
            topic = data["topic"]
            return cls(
                topic_name=str(topic["name"]), topic_title=str(topic["title"]),
                round=int(data["round"]), max_rounds=int(data["max_rounds"]),
                stats=RunStats.from_dict(data["stats"]),
                memory_counts={str(k): int(v) for k, v in data.get("memory_counts", {}).items()},
                written_files=[str(p) for p in data.get("written_files", [])],
                history=[Message(int(m["round"]), str(m["agent"]), str(m["text"]))
                         for m in data.get("history", [])],
                probe_answers=list(data.get("probe_answers", [])),
                saved_at=str(data.get("saved_at", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{source}: damaged checkpoint ({type(exc).__name__}: {exc})") from None

    def save(self, path: Path) -> Path:
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Checkpoint":
        data = read_json(Path(path), "checkpoint", CheckpointError)
        return cls.from_dict(data, str(Path(path)))

