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
