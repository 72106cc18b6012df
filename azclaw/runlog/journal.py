"""The run journal: one JSON line per event, appended as it happens.

File: ``<log_dir>/<name>_journal.jsonl``. Format version 3. Every line is an
object with ``v`` (the version), ``event``, ``time`` (ISO-8601, UTC) and
``run`` (the id of one process's session; a resumed run gets a new one).
Events and their fields:

* ``run_start``: topic, title, first_round, last_round, agents [names],
  resumed_from (the checkpoint's round, or null for a fresh run), pid and
  host of the writing process, phases [{name, rounds: [start, end]}],
  probes [{after_round, question, expect}], sandbox (the run_python sandbox
  level as the self-test found it, e.g. "landlock ABI 7 + seccomp net + rlimits"),
  context (the context mode:
  "memory", "full" or "window:N"; journals without it ran in memory mode),
  context_budget (tokens)
* ``turn_start``: round, agent (version 3: an agent's turn began; the
  ``turn`` line follows when it ends)
* ``turn``: ``Turn.to_dict()`` (``azclaw/turn.py``): round, phase (name or
  null), agent, prompt_tokens and completion_tokens (summed over the turn's
  requests, as the server reported them), context_tokens (the largest prompt
  of the turn, as reported), context_chars (characters of the largest request
  sent), requests, seconds (waiting for the model), tokens_per_second
  (completion tokens / seconds), tool_calls {name: count}, tool_errors,
  memories [titles], files [paths], errors [messages], text (the agent's
  message, in full), empty (the model answered with nothing), truncated
  (replies cut off at max_tokens), calls (version 3: the audit trail, every
  tool call of the turn in order: tool, arguments (the JSON text the model
  sent), result (what the model got back, ``ERROR: ...`` when it failed),
  ok, seconds, step, arguments_chars and result_chars (the full lengths:
  arguments and result are cut to 2,000 characters, run_python's to
  65,536, so the code that ran and what it printed are always there),
  duplicate (a repeat of an earlier call, not run again)), dropped (messages
  of the conversation left out of the turn's request to fit the context
  budget; always 0 in memory mode)
* ``probe``: the fields of a turn (the answer's cost), plus question,
  expect [phrases], answer (= text), correct (true/false, or null when the
  probe has no ``expect``)
* ``round_end``: round (every turn of the round and its probe answers are
  in the lines before it: ``--resume`` continues after the last of these)
* ``checkpoint``: round, path
* ``stop``: round, reason (the STOP file or signal)
* ``run_end``: round, reason ("finished", "stopped", "aborted",
  "interrupted", "error"), stats (``RunStats.to_dict()``)

A new version only adds events and fields; readers ignore what they do not
know, so journals of versions 1 and 2 still read (version 3 added the
``calls`` of turns, ``round_end`` lines and the turn fields ``empty`` and
``truncated``; a version-2 journal has no ``round_end``, so a resume from it
starts after its checkpoint).

Crash safety: each line is written with one ``write`` and flushed to the
operating system, so a killed run keeps every finished turn (at worst the
last line is torn and readers skip it). Lines are not fsynced one by one:
that cost about 2 ms per turn here, and only a crash of the whole machine
could lose the newest lines; checkpoints are fsynced. A killed run has no ``run_end``; status tells it from
a live one by the pid in ``run_start``.

Every turn exactly once: a resumed run redoes the rounds after its
checkpoint, so on resume the journal is rewritten (temporary file, fsync,
rename: readers see the old or the new file, never half) keeping every
line except the ``turn``, ``probe`` and ``checkpoint`` events of later
rounds; those lines move to ``<topic>_journal.superseded.jsonl`` beside it.
A fresh (not resumed) run of the same topic first renames an old journal
to ``<topic>_journal.<its start time>.jsonl``, so one journal is one run.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..errors import StorageError
from ..files import write_atomic

VERSION = 3
SUFFIX = "_journal.jsonl"
ROUND_EVENTS = ("turn_start", "turn", "probe", "round_end", "checkpoint")  # what a resume redoes


class Journal:
    """Appends events to ``path``; safe to call from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.run_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, resumed_from: int | None = None) -> "Journal":
        """The journal of a run: a fresh run archives an old journal of the
        same name; a run resumed from round N drops what came after N."""
        journal = cls(path)
        if resumed_from is None:
            journal.archive()
        else:
            journal.rewind(resumed_from)
        return journal

    @property
    def superseded_path(self) -> Path:
        return self.path.with_name(self.path.name[: -len(".jsonl")] + ".superseded.jsonl"
                                   if self.path.name.endswith(".jsonl") else self.path.name + ".superseded")

    def write(self, event: str, **fields) -> None:
        record = {"v": VERSION, "event": event,
                  "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "run": self.run_id, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # errors="replace": a lone surrogate from a model must not cost the line
                with open(self.path, "a", encoding="utf-8", errors="replace") as fh:
                    fh.write(line)
                    fh.flush()
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot write the journal ({exc.strerror or exc})") from None

    def rewind(self, round_no: int) -> int:
        """Keep only what a resume from ``round_no`` does not redo; move the
        rest (and torn lines) to the superseded file. Returns lines moved."""
        with self._lock:
            try:
                raw = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return 0
            keep, moved = [], []
            for line in raw.splitlines(keepends=True):
                try:
                    record = json.loads(line)
                    later = (record.get("event") in ROUND_EVENTS
                             and int(record.get("round") or 0) > round_no)
                except (ValueError, TypeError, AttributeError):
                    later = bool(line.strip())  # torn or foreign: not part of the record
                    if not later:
                        continue
                (moved if later else keep).append(line if line.endswith("\n") else line + "\n")
            if not moved:
                return 0
            # Superseded lines are saved before the journal loses them: a kill
            # in between leaves them in both files, never in neither.
            with open(self.superseded_path, "a", encoding="utf-8") as fh:
                fh.writelines(moved)
                fh.flush()
                os.fsync(fh.fileno())
            write_atomic(self.path, "".join(keep))
            return len(moved)

    def archive(self) -> Path | None:
        """Rename an existing journal (and its superseded lines) out of the
        way, named by the time its run started. Returns the new name."""
        with self._lock:
            if not self.path.exists():
                return None
            first = next(iter(read_journal(self.path)), {})
            stamp = str(first.get("time", "")).replace(":", "")[:17] or datetime.now(
                timezone.utc).strftime("%Y-%m-%dT%H%M%S")
            stem = self.path.name[: -len(".jsonl")] if self.path.name.endswith(".jsonl") else self.path.name
            target = self.path.with_name(f"{stem}.{stamp}.jsonl")
            n = 1
            while target.exists():
                n += 1
                target = self.path.with_name(f"{stem}.{stamp}-{n}.jsonl")
            if self.superseded_path.exists():
                os.replace(self.superseded_path, target.with_name(target.name[: -len(".jsonl")]
                                                                  + ".superseded.jsonl"))
            os.replace(self.path, target)
            return target


def read_journal(path: Path) -> list[dict]:
    """Every complete line of a journal; a torn or foreign line, or one whose
    round is not a number, is skipped."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [record for record in map(parse_line, fh) if record is not None]
    except FileNotFoundError:
        return []


def parse_line(line: str | bytes) -> dict | None:
    """One journal line as an event, or None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:  # UnicodeDecodeError included
        return None
    if not isinstance(record, dict) or "event" not in record:
        return None
    if "round" in record and (not isinstance(record["round"], int) or isinstance(record["round"], bool)):
        return None  # edited by hand into something no reader can place
    return record


def current_run(events: list[dict]) -> list[dict]:
    """The events since the last fresh ``run_start`` (journals written
    before version 2 could hold several runs)."""
    start = 0
    for i, event in enumerate(events):
        if event.get("event") == "run_start" and event.get("resumed_from") is None:
            start = i
    return events[start:]


def unique_turns(events: list[dict]) -> list[dict]:
    """Turn events, the last one for each (round, agent) pair, by round."""
    turns: dict[tuple, dict] = {}
    for event in events:
        if event.get("event") == "turn":
            turns[(event.get("round"), event.get("agent"))] = event
    return sorted(turns.values(), key=lambda e: int(e.get("round") or 0))


def retried_turns(events: list[dict]) -> list[dict]:
    """Turn events that a later attempt of the same round and agent replaced
    (a round in which every turn failed runs again)."""
    last = {id(e) for e in unique_turns(events)}
    return [e for e in events if e.get("event") == "turn" and id(e) not in last]
