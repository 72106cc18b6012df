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
      "context": "memory" | "full" | "window:N",  # the run's context mode (memory when absent)
      "history": [{"round", "agent", "text"}],   # the last 100 messages; in full
                                                 # mode all, in window:N mode enough for N rounds
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

from .context import Message
from .errors import CheckpointError, StorageError
from .files import read_json, write_atomic
from .state import RunState
from .stats import RunStats

FORMAT = "azclaw-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A run's state after a completed round, and what it belongs to."""

    topic_name: str
    topic_title: str
    max_rounds: int
    state: RunState = field(default_factory=RunState)
    memory_counts: dict[str, int] = field(default_factory=dict)
    saved_at: str = ""
    context: str = "memory"  # the run's context mode

    round = property(lambda self: self.state.round)
    stats = property(lambda self: self.state.stats)
    history = property(lambda self: self.state.history)
    probe_answers = property(lambda self: self.state.probe_answers)
    written_files = property(lambda self: self.state.written_files)

    def to_dict(self) -> dict:
        state = self.state
        return {
            "format": FORMAT, "version": VERSION,
            "topic": {"name": self.topic_name, "title": self.topic_title},
            "round": state.round, "max_rounds": self.max_rounds,
            "saved_at": self.saved_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stats": state.stats.to_dict(),
            "memory_counts": dict(self.memory_counts),
            "written_files": state.written_files,
            "context": self.context,
            "history": [m.to_dict() for m in state.history],  # add_round keeps what the context mode needs
            "probe_answers": list(state.probe_answers),
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
            state = RunState(round=int(data["round"]), stats=RunStats.from_dict(data["stats"]),
                             history=[Message(int(m["round"]), str(m["agent"]), str(m["text"]))
                                      for m in data.get("history", [])],
                             probe_answers=[dict(a) for a in data.get("probe_answers", [])])
            return cls(topic_name=str(topic["name"]), topic_title=str(topic["title"]),
                       max_rounds=int(data["max_rounds"]), state=state,
                       memory_counts={str(k): int(v) for k, v in data.get("memory_counts", {}).items()},
                       saved_at=str(data.get("saved_at", "")), context=str(data.get("context") or "memory"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{source}: damaged checkpoint ({type(exc).__name__}: {exc})") from None

    def save(self, path: Path) -> Path:
        try:
            write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        except OSError as exc:
            raise StorageError(f"{path}: cannot write the checkpoint of round {self.round} "
                               f"({exc.strerror or exc}); the one written before is kept") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Checkpoint":
        data = read_json(Path(path), "checkpoint", CheckpointError)
        return cls.from_dict(data, str(Path(path)))

