"""The run journal: one JSON line per event, appended as it happens.

File: ``<log_dir>/<name>_journal.jsonl`` (``RunFolder.journal``). Format
version 4. Every line is an object with ``v`` (the version), ``event``,
``time`` (ISO-8601, UTC) and ``run`` (the id of one process's session; a
resumed run gets a new one); the rest are the fields of the event class in
``azclaw/events.py`` (``to_dict``), which ``events.parse`` reads back:

* ``run_start`` (``RunStarted``): topic, title, first_round, last_round,
  agents [names], resumed_from (the last finished round a resume took up,
  or null for a fresh run), pid and host of the writing process, phases
  [{name, rounds: [start, end]}], probes [{after_round, question, expect}],
  sandbox (the run_python sandbox level the self-test found), context
  ("memory", "full" or "window:N"), context_budget (tokens)
* ``turn_start`` (``TurnStarted``): round, agent; the ``turn`` line follows
* ``turn`` (``TurnFinished``, ``Turn.to_dict()`` in ``azclaw/turn.py``):
  round, phase, agent, text (the agent's message, in full), requests,
  prompt_tokens, completion_tokens, cached_tokens (summed over the turn's
  requests, as the server reported them), context_tokens (the largest prompt),
  context_chars (the largest request sent), seconds (waiting for the model),
  calls (the audit trail, every tool use in order: tool, arguments (the JSON
  text the model sent), result (what the model got back, ``ERROR: ...`` when
  ``ok`` is false), ok, seconds, step, arguments_chars and result_chars (the
  full lengths: arguments and result are cut to 2,000 characters,
  run_python's to 65,536), duplicate (a repeat of an earlier call of the
  turn, not run again; its ok says whether the call it repeats worked),
  repeat (how it repeats it: same, echo, timestamp or near,
  ``azclaw/repeats.py``), effect
  {kind: memory|file|recall, target, status} (what the call changed, as the
  tool told it); a use with an empty tool is a reply whose calls did not
  parse, or calls over the cap), errors [messages], empty, truncated, mode,
  switched, problems, dropped; and, read from the calls for people and jq:
  tools {name: count}, tool_calls, tool_errors, repeats, memories [titles], files
  [paths], tokens_per_second
* ``tool_mode`` (``ToolModeChanged``): round, agent, mode, reason
* ``probe`` (``ProbeAnswered``): the fields of a turn (the answer's cost),
  question, expect [phrases], answer (= text), correct (true/false/null),
  unanswered
* ``round_failed`` (``RoundFailed``): round, attempt, error (every turn of
  the round failed; it runs again)
* ``round_end`` (``RoundFinished``): round (every turn of the round and its
  probe answers are in the lines before it)
* ``progress`` (``RoundProgress``): round, calls, failed, files, unchanged,
  memories, repeats, recalls, found, scored, correct (what the round got
  done, after its ``round_end``)
* ``finish_check`` (``FinishChecked``): round, command, ok, status, output
  (the finish line's check command ran; ``finish.py``)
* ``checkpoint`` (``CheckpointWritten``): round, path
* ``warning`` (``RunWarning``): message, round, agent, what (silent, no_tools,
  loop, no_progress, memory, skip, ...)
* ``run_end`` (``RunFinished``): round, reason (done, max_rounds, budget,
  loop, no_progress, stopped, signal, failed_rounds, error), detail (the
  reason in words), figures {...}, stats (``RunStats.to_dict()``), summary
  (the final summary's text)

A new version only adds events and fields; readers ignore what they do not
know, so journals of versions 1-3 still read: their ``turn`` lines carry
``tool_calls`` as {name: count} beside ``memories`` and ``files`` (read back
into calls with their effects), their runs end with reasons "finished",
"aborted", "interrupted" (read as max_rounds, failed_rounds, signal) and a
``stop`` line; version 2 has no ``round_end``.

Crash safety: each line is written with one ``write`` and flushed to the
operating system, so a killed run keeps every finished turn (at worst the
last line is torn and readers skip it). Lines are not fsynced one by one:
that cost about 2 ms per turn here, and only a crash of the whole machine
could lose the newest lines; checkpoints are fsynced. A killed run has no
``run_end``; status tells it from a live one by the pid in ``run_start``.
Every line is valid UTF-8: a lone surrogate from a model is written as
U+FFFD.

Every turn exactly once: a resumed run takes up the turns that finished
before the kill and runs only the rest. On resume the journal is rewritten
(streamed into a temporary file, fsync, rename: readers see the old or the
new file, never half) keeping every line up to and including the round the
resume takes up; lines of later rounds (a journal of version 2, which a
resume from its checkpoint redoes) move to
``<topic>_journal.superseded.jsonl`` beside it, and torn lines are dropped.
A fresh (not resumed) run of the same topic first renames an old journal
to ``<topic>_journal.<its start time>.jsonl``, so one journal is one run.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..errors import StorageError
from ..events import Event
from ..files import open_append
from ..numbers import whole

_SURROGATE = re.compile("[\ud800-\udfff]")

VERSION = 4
ROUND_EVENTS = ("turn_start", "turn", "probe", "round_end", "round_failed", "checkpoint", "tool_mode", "progress",
                "finish_check")


class Journal:
    """Appends events to ``path``; safe to call from several threads. A
    subscriber of the run's events: ``journal(event)`` writes its line."""

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

    def __call__(self, event: Event) -> None:
        if event.kind:
            self.write(event.kind, **event.to_dict())

    def write(self, event: str, **fields) -> None:
        record = {"v": VERSION, "event": event,
                  "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "run": self.run_id, **fields}
        text = json.dumps(record, ensure_ascii=False, default=str)
        # a lone surrogate from a model becomes U+FFFD: every line is valid UTF-8
        line = (_SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open_append(self.path, "journal") as fh:  # a link or a pipe in its place is refused
                    fh.write(line)
                    fh.flush()
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot write the journal ({exc.strerror or exc})") from None

    def rewind(self, round_no: int) -> int:
        """Keep only what a resume after round ``round_no`` does not redo:
        the finished turns of round ``round_no + 1`` stay (the resumed run
        takes them up); later rounds' lines move to the superseded file and
        torn or unreadable lines are dropped. Read and written as a stream.
        Returns the lines moved."""
        from .reader import lines
        with self._lock:
            if not self.path.exists():
                return 0
            moved: list[bytes] = []
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                with open(temporary, "wb") as keep:
                    for _, line in lines(self.path):
                        try:
                            record = json.loads(line.decode("utf-8", "replace"))
                        except ValueError:
                            continue
                        if not isinstance(record, dict):
                            continue
                        later = record.get("event") in ROUND_EVENTS and whole(record.get("round")) > round_no + 1
                        (moved.append if later else keep.write)(line + b"\n")
                    keep.flush()
                    os.fsync(keep.fileno())
                if moved:
                    # superseded lines are saved before the journal loses them: a kill in
                    # between leaves them in both files, never in neither
                    with open(self.superseded_path, "ab") as fh:
                        fh.writelines(moved)
                        fh.flush()
                        os.fsync(fh.fileno())
                os.replace(temporary, self.path)
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot rewrite the journal for the resume "
                                   f"({exc.strerror or exc})") from None
            finally:
                temporary.unlink(missing_ok=True)
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
    """Every complete line of a journal as its raw JSON object (for scripts
    and tests; azclaw itself reads typed events, ``reader.events``)."""
    from .reader import lines
    out = []
    for _, line in lines(path):
        try:
            record = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            out.append(record)
    return out
