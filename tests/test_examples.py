"""The shipped topics and example scripts work as the README says."""

import subprocess
import sys
from pathlib import Path

import pytest

from azclaw import Topic
from fakellm import call, text
from helpers import CLI_TIMEOUT, cli_env

REPO = Path(__file__).resolve().parent.parent
TOPICS = sorted((REPO / "topics").glob("*.json"))


@pytest.mark.parametrize("path", TOPICS, ids=[p.stem for p in TOPICS])
def test_every_shipped_topic_loads_and_its_probes_fall_inside_its_phases(path):
    topic = Topic.load(path)
    assert topic.phases and topic.coherence_probes
    assert all(1 <= p.after_round <= topic.last_round for p in topic.coherence_probes)
    assert any(p.expect for p in topic.coherence_probes)


def test_the_cobol_topic_names_files_that_ship_in_the_examples():
    topic = Topic.load(REPO / "topics" / "cobol-migration.json")
    sources = REPO / "examples" / "bank-cobol"
    for phase in topic.phases:
        for name in phase.source_files:
            assert (sources / name).is_file(), name


def run_example(name: str, url: str, rounds: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "examples" / name)], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
                          env=cli_env(AZCLAW_ENDPOINT=url, AZCLAW_ROUNDS=str(rounds)))


def test_the_quickstart_runs_three_agents_and_prints_files_and_memories(fake_llm, workdir):
    fake = fake_llm(per_agent={
        "architect": [call("remember", {"text": "Routes: GET/POST /todos", "title": "routes"}), text("designed")],
        "developer": [call("write_file", {"path": "app.py", "content": "print('todo')\n"}), text("wrote app.py")]})
    proc = run_example("quickstart.py", fake.url, rounds=2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["Files: 1", "Memories: 1"]
    turns = [(r.round, r.agent) for r in fake.chats if len(r.messages) == 2]  # the first request of each turn
    assert turns == [(n, a) for n in (1, 2) for a in ("architect", "developer", "reviewer")]
    assert (workdir / "output" / "app.py").read_text() == "print('todo')\n"


def test_the_custom_tool_example_offers_and_runs_its_tool(fake_llm):
    fake = fake_llm(per_agent={"analyst": [call("search_code", {"word": "OVER CREDIT LIMIT"}), text("found it")]})
    proc = run_example("custom_tool.py", fake.url, rounds=1)
    assert proc.returncode == 0, proc.stderr
    first, follow_up = fake.chats_of("analyst")[:2]
    assert "search_code" in first.tool_names
    assert "cbl/ACCTUPD.cbl" in follow_up.tool_results[0] and "OVER CREDIT LIMIT" in follow_up.tool_results[0]


def test_the_cobol_topic_runs_from_the_cli_with_its_sources(fake_llm, azclaw):
    fake = fake_llm(per_agent={"architect": [call("read_file", {"path": "cbl/ACCTREC.cpy"}), text("mapped")]})
    proc = azclaw("run", "--topic", str(REPO / "topics" / "cobol-migration.json"), "--source",
                  str(REPO / "examples" / "bank-cobol"), "--endpoint", fake.url, "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    first = fake.chats_of("architect")[0]
    assert "Phase 1 of 4: Discovery (rounds 1-5)" in first.system
    assert "Files to study: cbl/ACCTUPD.cbl, cbl/ACCTREC.cpy" in first.system
    assert "ACCT-BALANCE" in fake.chats_of("architect")[1].tool_results[0]


def test_the_stop_condition_example_ends_the_run_when_its_observer_says_so(fake_llm, workdir):
    def developer(request):
        if request.tool_results or not request.offers_tools:
            return text(f"wrote file {request.round}")
        return call("write_file", {"path": f"f{request.round}.py", "content": "pass\n"})
    fake = fake_llm(responder=lambda r: developer(r) if r.agent == "developer" else text(f"plan {r.round}"))
    proc = run_example("stop_condition.py", fake.url, rounds=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "done (three files written: f1.py, f2.py, f3.py)"
    assert max(r.round for r in fake.chats) == 3
