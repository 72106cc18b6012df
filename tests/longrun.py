"""A 24-round run of the real ``azclaw run`` against FakeLLM, killed once.

Shared by test_runlog_journal, test_runlog_status and test_runlog_report. The script:

* three agents (architect, developer, reviewer); the architect remembers a
  decision every 3rd round, the reviewer every 5th, the developer writes a
  file every 4th round; checkpoints every 5 rounds;
* probes after rounds 5 and 20 (database, expect "postgres|postgresql"), 12 (language,
  expect "python") and 24 (not scored). The architect answers both right,
  the developer gets the language wrong (after the kill), the reviewer the
  database;
* in round 13 the developer's first request is held until the test has run
  ``azclaw status`` against the live run; then the process is SIGKILLed
  (its last checkpoint is round 10, its journal shows rounds 11 and 12
  finished) and the run is resumed with --resume: only round 13 is redone.
  Before the kill the probe of round 12 is answered right by everyone; those
  answers are kept (their round was finished), so the score is 7/9; had
  rounds 11 and 12 been redone, it would be 6/9.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fakellm import FakeLLM, Recorded, Reply, call, text
from helpers import CLI_TIMEOUT

AGENTS = ["architect", "developer", "reviewer"]
LAST_ROUND = 24
KILL_ROUND = 13
WAIT = CLI_TIMEOUT  # seconds; only a bound for a broken run, never asserted on
TOPIC = {
    "title": "Build a todo API",
    "initial_prompt": "Build a small todo API.",
    "phases": [{"name": "Design", "rounds": [1, 8]}, {"name": "Build", "rounds": [9, 18]},
               {"name": "Review", "rounds": [19, LAST_ROUND]}],
    "coherence_probes": [
        {"after_round": 5, "question": "What database engine did we choose?", "expect": ["postgres|postgresql"]},
        {"after_round": 12, "question": "Which language is the service written in?", "expect": ["python"]},
        {"after_round": 20, "question": "What database engine did we choose?", "expect": ["postgres|postgresql"]},
        {"after_round": LAST_ROUND, "question": "What is left to do?"},
    ],
}
ANSWERS = {  # (agent, keyword of the question) -> answer
    ("architect", "database"): "We chose PostgreSQL for its transactions.",
    ("developer", "database"): "Postgres, as the architect decided.",
    ("reviewer", "database"): "I believe it was SQLite.",
    ("architect", "language"): "Python, with the standard library.",
    ("developer", "language"): "Go, I think.",
    ("reviewer", "language"): "Python.",
}
EXPECTED_SCORE = (7, 9)
RESUMED_FROM = KILL_ROUND - 1  # the last round the journal shows finished
_ROUND = re.compile(r"Current round: (\d+) of")


@dataclass
class LongRun:
    tmp: Path
    logs: Path
    fake: FakeLLM
    first_pid: int = 0
    status_during: str = ""  # `azclaw status` while round 13 was held
    status_json_during: dict = field(default_factory=dict)
    status_after_kill: dict = field(default_factory=dict)
    run_outputs: list[str] = field(default_factory=list)

    @property
    def journal(self) -> Path:
        return self.logs / "todo_api_journal.jsonl"

    @property
    def superseded(self) -> Path:
        return self.logs / "todo_api_journal.superseded.jsonl"

    def azclaw(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "azclaw", *args], cwd=self.tmp, capture_output=True,
                              text=True, timeout=WAIT)


class Script:
    """The FakeLLM responder; holds round 13 of the first session."""

    def __init__(self):
        self.first_session = True
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, req: Recorded) -> Reply:
        system = next((m["content"] for m in req.messages if m["role"] == "system"), "")
        user = next((m["content"] for m in req.messages if m["role"] == "user"), "")
        found = _ROUND.search(system)
        round_no = int(found.group(1)) if found else 0
        agent = req.agent
        if user.startswith("Coherence check"):
            return text(self.answer(agent, user))
        if req.messages[-1]["role"] == "tool":
            return text(f"{agent} finished round {round_no}. " + "Next steps follow. " * (3 + round_no % 5))
        if self.first_session and agent == "developer" and round_no == KILL_ROUND:
            self.held.set()
            self.release.wait(WAIT)  # the process is killed meanwhile; this reply goes nowhere
            return text("too late")
        if agent == "architect" and round_no % 3 == 0:
            return call("remember", {"text": f"Decision of round {round_no}: PostgreSQL.",
                                     "title": f"decision-{round_no}"})
        if agent == "reviewer" and round_no % 5 == 0:
            return call("remember", {"text": f"Review note {round_no}.", "title": f"review-{round_no}"})
        if agent == "developer" and round_no % 4 == 0:
            return call("write_file", {"path": f"app/step{round_no}.py", "content": f"STEP = {round_no}\n"})
        return text(f"{agent}, round {round_no}: " + "Work goes on. " * (4 + (round_no * 7) % 9))

    def answer(self, agent: str, question: str) -> str:
        if "left to do" in question:
            return "Tests and documentation."
        key = "database" if "database" in question else "language"
        if self.first_session and key == "language":
            return "Python."  # the superseded answers: all right
        return ANSWERS[(agent, key)]


def killed_and_resumed_run(tmp: Path) -> LongRun:
    """Run, hold round 13, read status, SIGKILL, read status, resume to the end."""
    tmp = Path(tmp)
    (tmp / "todo-api.json").write_text(json.dumps(TOPIC), encoding="utf-8")
    script = Script()
    fake = FakeLLM(responder=script).start()
    run = LongRun(tmp=tmp, logs=tmp / "logs", fake=fake)
    command = [sys.executable, "-m", "azclaw", "run", "--topic", str(tmp / "todo-api.json"),
               "--endpoint", fake.base, "--log-dir", "logs", "--output", "out", "--agents-dir", "agents",
               "--quiet", "--no-run-python", "--tool-mode", "native"]  # a model that calls tools now and then
    try:
        with open(tmp / "first.out", "w") as out:
            first = subprocess.Popen(command, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        try:
            while not script.held.wait(0.05):  # until round 13 is held, or the run is gone
                if first.poll() is not None:
                    raise AssertionError("the run ended before round 13:\n" + (tmp / "first.out").read_text())
            run.first_pid = first.pid
            run.status_during = run.azclaw("status", "--log-dir", "logs").stdout
            run.status_json_during = json.loads(run.azclaw("status", "--log-dir", "logs", "--json").stdout)
        finally:
            first.kill()  # SIGKILL: no checkpoint, no run_end
            first.wait(WAIT)
        run.status_after_kill = json.loads(run.azclaw("status", "--log-dir", "logs", "--json").stdout)
        script.first_session = False
        script.release.set()
        resumed = subprocess.run(command + ["--resume"], cwd=tmp, capture_output=True, text=True, timeout=WAIT)
        run.run_outputs = [(tmp / "first.out").read_text(), resumed.stdout + resumed.stderr]
        if resumed.returncode != 0:
            raise AssertionError("the resumed run failed:\n" + run.run_outputs[1])
    finally:
        script.release.set()
        fake.stop()
    return run
