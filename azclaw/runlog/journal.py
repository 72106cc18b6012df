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
  (completion tokens / seconds), tool_calls (calls that ran), tools {name:
  count}, tool_errors (calls that failed or did not parse; a repeat is not
  another error), repeats (calls skipped as repeats),
  memories [titles], files [paths], errors [messages], text (the agent's
  message, in full), empty (the model answered with nothing), truncated
  (replies cut off at max_tokens), calls (version 3: the audit trail, every
  tool call of the turn in order: tool, arguments (the JSON text the model
  sent), result (what the model got back, ``ERROR: ...`` when it failed),
  ok, seconds, step, arguments_chars and result_chars (the full lengths:
  arguments and result are cut to 2,000 characters, run_python's to
  65,536, so the code that ran and what it printed are always there),
  duplicate (a repeat of an earlier call, not run again; its ok says whether
  the call it repeats worked), repeat (how it repeats it: same, echo,
  timestamp or near, ``azclaw/repeats.py``; absent before)), dropped (messages
  of the conversation left out of the turn's request to fit the context
  budget; always 0 in memory mode)
* ``probe``: the fields of a turn (the answer's cost), plus question,
  expect [phrases], answer (= text), correct (true/false, or null when the
  probe has no ``expect``)
* ``round_end``: round (every turn of the round and its probe answers are
  in the lines before it: ``--resume`` continues after the last of these)
* ``checkpoint``: round, path
* ``tool_mode``: round, agent, mode, reason (an ``auto`` agent's tool calls
  go ``mode`` from now on: one line per move)
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
import re
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..errors import StorageError
from ..events import Event
from ..numbers import whole

_SURROGATE = re.compile("[\ud800-\udfff]")

VERSION = 4
ROUND_EVENTS = ("turn_start", "turn", "probe", "round_end", "round_failed", "checkpoint", "tool_mode")


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
                with open(self.path, "a", encoding="utf-8") as fh:
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
