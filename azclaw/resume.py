"""Taking up an interrupted run: its checkpoint, then the rounds its journal
shows finished after it; the journal alone when it was killed before its
first checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, RunState
from .errors import CheckpointError
from .runlog.journal import current_run, read_journal


@dataclass
class Interrupted:
    """What a resume takes up: the state, the last round that run planned
    (None when unknown), the context mode it ran in, and where that was read."""

    state: RunState
    planned: int | None
    context: str | None
    source: Path


def take_up(resume, checkpoint_path: Path, journal_path: Path, topic_name: str, topic_title: str) -> Interrupted:
    """``resume`` is True (this topic's checkpoint in the log folder) or a
    checkpoint's path."""
    path = checkpoint_path if resume is True else Path(resume)
    events = current_run(read_journal(journal_path))
    starts = [e for e in events if e.get("event") == "run_start"]
    if path.exists() or resume is not True or not starts:
        checkpoint = Checkpoint.load(path)
        identity = (checkpoint.topic_name, checkpoint.topic_title)
        found = Interrupted(checkpoint.state, checkpoint.max_rounds, checkpoint.context, path)
    else:  # killed before its first checkpoint: the journal alone
        last = starts[-1]
        identity = (last.get("topic"), last.get("title"))
        found = Interrupted(RunState(), last.get("last_round"), last.get("context"), journal_path)
    if identity != (topic_name, topic_title):
        raise CheckpointError(f"{found.source}: it belongs to topic {identity[0]!r} ({identity[1]!r}), "
                              f"not {topic_name!r} ({topic_title!r})")
    if starts and (starts[-1].get("topic"), starts[-1].get("title")) == identity:
        found.state.replay(events)
    if not (isinstance(found.planned, int) and not isinstance(found.planned, bool) and found.planned > 0):
        found.planned = None
    return found
