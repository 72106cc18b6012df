"""Taking up an interrupted run: its checkpoint, then the turns its journal
shows finished after it (folded by the same ``RunState.apply`` the run
uses); the journal alone when it was killed before its first checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint
from .errors import CheckpointError
from .events import RunStarted
from .runlog.reader import events
from .state import RunState


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
    start, offset = _last_start(journal_path)
    if path.exists() or resume is not True or start is None:
        checkpoint = Checkpoint.load(path)
        identity = (checkpoint.topic_name, checkpoint.topic_title)
        found = Interrupted(checkpoint.state, checkpoint.max_rounds, checkpoint.context, path)
    else:  # killed before its first checkpoint: the journal alone
        identity = (start.topic, start.title)
        found = Interrupted(RunState(), start.last_round, start.context, journal_path)
    if identity != (topic_name, topic_title):
        raise CheckpointError(f"{found.source}: it belongs to topic {identity[0]!r} ({identity[1]!r}), "
                              f"not {topic_name!r} ({topic_title!r})")
    if start is not None and (start.topic, start.title) == identity:
        for logged in events(journal_path, offset):
            found.state.apply(logged.event)
    if not (isinstance(found.planned, int) and not isinstance(found.planned, bool) and found.planned > 0):
        found.planned = None
    return found


def _last_start(journal_path: Path) -> tuple[RunStarted | None, int]:
    """The newest fresh ``run_start`` of the journal and where its run's lines begin."""
    start, offset, newest = None, 0, None
    for logged in events(journal_path):
        if isinstance(logged.event, RunStarted):
            newest = logged.event
            if logged.event.resumed_from is None:
                start, offset = logged.event, logged.offset
    return newest if start is not None else None, offset
