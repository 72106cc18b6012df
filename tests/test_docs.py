"""The README documents every command and every option of the CLI."""

import re
from pathlib import Path

import pytest

from azclaw.cli import make_parser

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _subparsers():
    parser = make_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_command_is_in_the_readme(command):
    assert f"azclaw {command}" in README


@pytest.mark.parametrize("command, option", sorted(
    (name, opt) for name, sub in _subparsers().items()
    for action in sub._actions for opt in action.option_strings if opt.startswith("--") and opt != "--help"))
def test_every_option_is_in_the_readme(command, option):
    assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", README), \
        f"azclaw {command} {option} is not documented in README.md"


@pytest.mark.parametrize("command", sorted(_subparsers()))
def test_every_command_has_help_with_an_example(command):
    sub = _subparsers()[command]
    assert sub.epilog and "azclaw " + command in sub.epilog


def test_the_readme_observer_sees_every_turn_and_its_stop_ends_the_run(fake_llm, capsys):
    from azclaw import Agent, Orchestrator
    from fakellm import text
    block = README.split("### Observers: watch and steer a run from your program", 1)[1].split("```python", 1)[1]
    code = block.split("```", 1)[0].split("\norch = ", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    fake = fake_llm(per_agent={"developer": [text("wrote it"), text("ran it: ALL TESTS PASS")]})
    team = [Agent("architect", endpoint=fake.url), Agent("developer", endpoint=fake.url, can_write=True)]
    orch = Orchestrator(agents=team, observers=[namespace["watch"]], verbose=False)
    orch.run(max_rounds=5)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[:-1]] == [
        "round 1 architect", "round 1 developer", "round 2 architect", "round 2 developer"]
    assert printed[-1] == "ended: done (developer says the tests pass)"
    assert orch.ending.reason == "done" and len(fake.chats) == 4
