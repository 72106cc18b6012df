"""The system prompt (prompt.py): a worked example of a good turn in its
stable part, the same in every round; round 1 carries what to do first."""

from __future__ import annotations

import os

from azclaw import Topic
from azclaw.prompt import EXAMPLE, FIRST_ROUND
from fakellm import text
from helpers import orchestrator, team


def test_the_worked_example_is_in_the_stable_part_of_every_round(fake_llm):
    fake = fake_llm(default="Planned.")
    orchestrator(team(fake.url, "architect", "developer", writers=("developer",), tool_mode="native")).run(max_rounds=3)
    systems = [r.system for r in fake.chats_of("architect")]
    assert len(systems) == 3
    for system in systems:
        assert EXAMPLE in system and system.index(EXAMPLE) < system.index("Current round:")
        assert system.index("Your tools:") < system.index(EXAMPLE)
    assert len({s[: s.index("Current round:")] for s in systems}) == 1
    for a, b in zip(systems, systems[1:]):
        assert len(os.path.commonprefix([a, b])) >= 0.9 * len(a)


def test_the_example_calls_recall_then_remember_under_a_title_then_answers():
    steps = [line for line in EXAMPLE.splitlines() if line[:2] in ("1.", "2.", "3.", "4.")]
    assert [s.split()[1:3] for s in steps] == [["Call", "recall"], ["Build", "on"], ["Call", "remember"],
                                               ["End", "with"]]
    assert 'the title "late fee rule"' in steps[2]
    assert "{" not in EXAMPLE and "<" not in EXAMPLE, "no call syntax: the mode's instructions say how to call"


def test_an_agent_without_recall_and_remember_gets_no_example(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "reader", tools=["read_file", "list_files"])).run(max_rounds=1)
    assert "A good turn, for example" not in fake.chats[0].system


def test_round_one_asks_for_decisions_under_titles_when_the_topic_has_no_phases(fake_llm):
    fake = fake_llm()
    orch = orchestrator(team(fake.url, "architect"))
    orch.set_task("Plan a command-line todo app in Python")
    orch.run(max_rounds=2)
    first, second = fake.chats
    assert first.user == "Plan a command-line todo app in Python\n\n" + FIRST_ROUND
    assert FIRST_ROUND not in second.user


def test_round_one_carries_the_first_phases_focus(fake_llm):
    topic = Topic.from_dict({"title": "T", "initial_prompt": "Build a todo API.", "phases": [
        {"name": "Design", "rounds": [1, 2], "focus": "Decide the schema and the routes."},
        {"name": "Build", "rounds": [3, 4], "focus": "Write the code."}]})
    fake = fake_llm(responder=lambda r: text("ok"))
    orchestrator(team(fake.url, "architect"), topic=topic).run(max_rounds=3)
    assert fake.chats[0].user == "Build a todo API.\n\nRound 1, phase Design: Decide the schema and the routes."
    assert "Decide the schema" not in fake.chats[1].user
