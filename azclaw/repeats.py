"""Repeated tool calls within one turn: identical ones and near-repeats.

A small model with nothing better to do calls the same tool again and
again, and each call costs a request of the whole conversation so far.
Four kinds of call repeat an earlier call of the same turn:

* ``same``: the same tool with the same arguments.
* ``echo``: the same tool as the previous call, with an argument that is
  that call's result, or a name quoted in it
  (``remember "152526"`` -> "Remembered as '152543'" -> ``remember "152543"``).
* ``timestamp``: a second ``remember`` in the turn whose title (or text) is
  only a timestamp or a number, or that has no title (its title becomes the
  time of day): memories nobody can find again.
* ``near``: the same tool with trivial changes: the same arguments up to
  case, spaces and punctuation (code and file contents to the character);
  a ``remember`` of the same text under another title; or, right after the
  call it repeats, the same target (``TARGETS``: the title of a memory, the
  path of a file, the query of a recall) with texts at least 90% alike.

A repeat is not run again: the model reads why, the journal keeps it as a
repeat (of a call that failed, when it did), and a step made only of
repeats ends the turn's tool use (``turn.py``).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass

SAME, ECHO, TIMESTAMP, NEAR = "same", "echo", "timestamp", "near"
KINDS = (SAME, ECHO, TIMESTAMP, NEAR)
# the argument that names what a call is about; a call on the same target with trivial changes repeats it
TARGETS = {"remember": "title", "write_file": "path", "read_file": "path", "recall": "query",
           "list_files": "directory", "run_python": "code"}
SAME_CONTENT = {"remember": "text"}  # the same content under another target is a repeat too
CODE = ("content", "code")  # arguments compared character for character
ALIKE = 0.9  # texts at least this alike (difflib's ratio) differ trivially
ECHO_CHARS = 300  # a result this short is an acknowledgement; longer ones (a file) may name what to read next
COMPARED_CHARS = 4000  # longer texts are compared on their first characters (ratio is quadratic)
_TIMESTAMP = re.compile(r"[\d\s:.,/_+\-TZ]*\d[\d\s:.,/_+\-TZ]*")
_QUOTED = re.compile(r"'([^'\n]{1,200})'|\"([^\"\n]{1,200})\"")
_NOT_WORD = re.compile(r"[\W_]+")

SKIPPED = {
    SAME: "this exact call was already made in this turn; its result is above",
    ECHO: "its arguments are the result of your previous call; calling again only repeats it",
    TIMESTAMP: "another memory without a descriptive title (a timestamp or a number is not one)",
    NEAR: "it repeats an earlier call of this turn with trivial changes; its result is above",
}


@dataclass(frozen=True)
class Made:
    """A call made earlier in the turn, as the repeat check needs it."""

    tool: str
    arguments: dict | None  # as parsed (None: they did not parse)
    raw: str  # the arguments as the model sent them
    result: str
    ok: bool = True


@dataclass(frozen=True)
class Repeat:
    """Why a call repeats one made before: ``kind`` and the index of that
    call among the turn's calls made (``of``)."""

    kind: str
    of: int

    def result(self, earlier_ok: bool) -> str:
        """What the model reads instead of the call's result."""
        head = "[repeat of a call that failed, skipped" if not earlier_ok else "[repeat skipped"
        return f"{head}: {SKIPPED[self.kind]}]"


def find_repeat(tool: str, arguments: dict | None, raw: str, made: list[Made]) -> Repeat | None:
    """The earlier call of ``made`` that a call of ``tool`` repeats, and
    how; None for a new call. Arguments that did not parse (None) repeat
    only the same text."""
    if arguments is None:
        return next((Repeat(SAME, n) for n in range(len(made) - 1, -1, -1)
                     if made[n].tool == tool and made[n].arguments is None and made[n].raw == raw), None)
    args = _meaningful(arguments)
    mine = [n for n in range(len(made) - 1, -1, -1) if made[n].tool == tool and made[n].arguments is not None]
    for n in mine:
        if _meaningful(made[n].arguments) == args:
            return Repeat(SAME, n)
    last = len(made) - 1
    for n in mine:
        if _same_words(args, _meaningful(made[n].arguments)):
            return Repeat(NEAR, n)
    if mine and mine[0] == last and len(made[last].result) <= ECHO_CHARS and _echoes(args, made[last]):
        return Repeat(ECHO, last)
    if tool == "remember" and _untitled(args):
        for n in mine:
            if made[n].ok and _untitled(_meaningful(made[n].arguments)):
                return Repeat(TIMESTAMP, n)
    for n in mine:
        if _trivially_changed(tool, args, _meaningful(made[n].arguments), previous=n == last):
            return Repeat(NEAR, n)
    return None


def _meaningful(arguments: dict) -> dict:
    """The arguments without the empty ones (an empty optional argument
    says nothing the call without it does not)."""
    return {k: v for k, v in arguments.items() if v not in ("", None, [], {})}


def normal(value, key: str = "") -> str:
    """A value as words: case, spaces, punctuation and quotes left out;
    code (``CODE``) only without its outer spaces: there every character counts."""
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if key in CODE:
        return value.strip()
    return " ".join(_NOT_WORD.sub(" ", value.casefold()).split())


def is_timestamp(text: str) -> bool:
    """Digits and separators only: ``152543``, ``2017-3-15``, ``10:30``."""
    return bool(_TIMESTAMP.fullmatch(text.strip()))


def _untitled(args: dict) -> bool:
    title, text = args.get("title"), args.get("text")
    return (not isinstance(title, str) or is_timestamp(title)
            or (isinstance(text, str) and is_timestamp(text)))


def _echoes(args: dict, previous: Made) -> bool:
    """An argument that is the previous result, or a name quoted in it,
    and was not already that argument of the previous call (the same title
    again adds to a memory)."""
    said = {normal(a or b) for a, b in _QUOTED.findall(previous.result)} | {normal(previous.result)}
    said.discard("")
    before = previous.arguments or {}
    return any(isinstance(v, str) and normal(v) in said and normal(v) != normal(before.get(k, ""))
               for k, v in args.items())


def _same_words(args: dict, before: dict) -> bool:
    return set(args) == set(before) and all(normal(v, k) == normal(before[k], k) for k, v in args.items())


def _trivially_changed(tool: str, args: dict, before: dict, previous: bool) -> bool:
    """The same call up to case, spaces and punctuation; the same content
    under another target; or, right after the earlier call, the same target
    with texts ``ALIKE`` (nothing ran in between that could make a small
    change matter)."""
    if _same_words(args, before):
        return True
    content = SAME_CONTENT.get(tool)
    if content and isinstance(args.get(content), str) and normal(args[content]) \
            and normal(args[content]) == normal(before.get(content, "")):
        return True
    target = TARGETS.get(tool)
    if not previous or target is None or set(args) != set(before) or not normal(args.get(target, ""), target) \
            or normal(args[target], target) != normal(before[target], target):
        return False
    for key, value in args.items():
        other = before[key]
        if key == target:
            continue
        if isinstance(value, str) and isinstance(other, str):
            if not alike(value, other):
                return False
        elif value != other:
            return False
    return True


def alike(a: str, b: str) -> bool:
    """Texts that differ only trivially (``ALIKE``)."""
    a, b = a.strip()[:COMPARED_CHARS], b.strip()[:COMPARED_CHARS]
    if a == b:
        return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.real_quick_ratio() >= ALIKE and matcher.quick_ratio() >= ALIKE and matcher.ratio() >= ALIKE
