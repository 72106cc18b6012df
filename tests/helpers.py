"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import date
from pathlib import Path

from azclaw import Agent, Orchestrator

# Tests wait for events (a file, a line, a state); these bounds only keep a hung process or a
# missing event from holding the suite forever. They are never a measure of speed: on a busy
# 2-core machine (load 7-15) a run against the scripted server took minutes, not its 1-3 s.
CLI_TIMEOUT = 600
MODEL_TIMEOUT = 3600  # a real model on a CPU: its first turn took over 2 minutes on a busy 2-core machine
ENV_VARS = ("AZCLAW_API_KEY", "AZCLAW_ENDPOINT", "AGENTAZALL_ROOT")


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(extra)
    return env


def wait_for(predicate, timeout: float = CLI_TIMEOUT, what: str = "condition") -> None:
    """Poll ``predicate`` until true; a generous limit only to avoid hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def memory_file(root: Path, agent: str, title: str) -> Path:
    """Where AgentAZAll keeps ``title`` remembered today by ``agent``."""
    return Path(root) / "data" / "mailboxes" / agent / date.today().isoformat() / "remember" / f"{title}.txt"


def assert_one_error_line(proc: subprocess.CompletedProcess, *names: str) -> str:
    """The CLI's contract for bad input: non-zero exit, one stderr line
    ``azclaw: error: ...`` naming each of ``names``, and no traceback."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("azclaw: error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def team(url: str, *names: str, writers: tuple[str, ...] = (), **kwargs):
    """Agents on one endpoint; no retries, so a scripted error fails fast."""
    kwargs.setdefault("retries", 0)
    return [Agent(name, endpoint=url, can_write=name in writers, **kwargs) for name in names]


def fast_clients(agent, outages):
    """A client factory whose retries wait milliseconds, not seconds."""
    from azclaw.session import default_client
    client = default_client(agent, outages)
    client.backoff, client.max_backoff = 0.001, 0.05
    return client


def orchestrator(agents, **kwargs):
    """An Orchestrator with the test defaults (quiet console)."""
    kwargs.setdefault("verbose", False)
    return Orchestrator(agents, **kwargs)


def turn_requests(fake, agent: str, round_no: int):
    return [r for r in fake.chats_of(agent) if r.round == round_no]


def run_file(folder: Path, suffix: str, exclude: str = "") -> Path:
    """The one file of a run in ``folder`` whose name ends with ``suffix``
    (``_checkpoint.json``, ``_journal.jsonl``): a --task run is named from its task."""
    found = [p for p in Path(folder).glob(f"*{suffix}") if p.name != exclude]
    assert len(found) == 1, (suffix, found)
    return found[0]


WORDS = ("schema route handler storage sqlite table index migration validation error status code json body request "
         "response test fixture port server client todo title due date flag update delete create list paragraph "
         "record layout field decimal rounding copybook account balance invoice payment reminder report module "
         "interface function class method file review bug fix plan decision cents postgres overdue email customer "
         "export tax refund parser format dataclass batch closed reject width digits leading zeros").split()


def words(seed: str, n: int = 30) -> str:
    """``n`` words drawn from ``WORDS``, the same for the same ``seed``."""
    import random
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def working_team(request):
    """A scripted team that works as a real one does, for runs that must trip
    no watcher: the architect recalls and stores a decision, the developer
    writes a changed file, the reviewer reads the developer's last file and
    stores a finding; every message is different. Probe questions (only
    recall offered) get an answer; a step without tools gets the message."""
    from fakellm import call, text
    agent, r, step = request.agent, request.round, len(request.tool_results)
    say = text(f"{agent}, round {r}: " + words(f"{agent}-{r}-say", 40))
    if not request.offers_tools or request.tool_names == ["recall"]:
        return say
    if agent == "developer":
        if step == 0:
            return call("write_file", {"path": f"mod{r % 4}.py",
                                       "content": f"# round {r}\n# {words(f'{r}-code', 12)}\n"})
        return say
    if agent == "reviewer" and step == 0:
        return call("read_file", {"path": f"mod{(r - 1) % 4}.py"}) if r > 1 else call("list_files", {})
    if step == 0:
        return call("recall", {"query": words(f"{agent}-{r}-query", 3)})
    if step == 1:
        return call("remember", {"title": f"{agent}-round-{r}", "text": words(f"{agent}-{r}-memory", 20)})
    return say
