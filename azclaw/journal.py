"""The run journal: one JSON line per event, appended as it happens.

Format version 1. Every line is an object with ``v`` (1), ``event``,
``time`` (ISO-8601, UTC) and ``run`` (an id for one process's run; a resumed
run gets a new one). Events and their fields:

* ``run_start``: topic, title, first_round, last_round, agents, resumed_from
* ``turn``: round, phase, agent, prompt_tokens, completion_tokens,
  context_chars (largest request of the turn), requests, seconds,
  tokens_per_second, tool_calls ({name: count}), memories (titles), files
  (paths), errors (messages), text (the agent's message, in full)
* ``probe``: round, agent, question, answer, correct (true/false/null)
* ``checkpoint``: round, path
* ``stop``: round, reason
* ``run_end``: round, reason ("finished", "stopped", "aborted", "interrupted"), stats

Lines are flushed one by one, so a killed run keeps every finished turn.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

VERSION = 1


class Journal:
    """Appends events to ``path``; safe to call from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.run_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> None:
        record = {"v": VERSION, "event": event,
                  "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "run": self.run_id, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())


def read_journal(path: Path) -> list[dict]:
    """Every complete line of a journal; a torn last line is skipped."""
    events = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        return []
    return events
