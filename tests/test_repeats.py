"""Which calls of a turn repeat an earlier one (repeats.py): each kind of
near-repeat, and the calls that look alike but are new work."""

from __future__ import annotations

import pytest

from azclaw.repeats import ECHO, NEAR, SAME, TIMESTAMP, Made, find_repeat, is_timestamp

REMEMBERED = "Remembered as '152543' (2025-01-01)."


def made(tool: str, result: str = "ok", ok: bool = True, **arguments) -> Made:
    return Made(tool, arguments, "", result, ok)


@pytest.mark.parametrize("earlier, tool, arguments, kind", [
    # the same call
    ([made("recall", query="database")], "recall", {"query": "database"}, SAME),
    ([made("recall", query="database")], "recall", {"query": "database", "agent": ""}, SAME),
    # its arguments are the previous call's result, or a name quoted in it
    ([made("remember", REMEMBERED, text="152526")], "remember", {"text": "152543"}, ECHO),
    ([made("remember", "Remembered as 'db choice' (2025-01-01).", text="SQLite", title="db choice")],
     "remember", {"text": "db choice", "title": "db"}, ECHO),
    ([made("list_files", "[no files]", directory="")], "list_files", {"directory": "[no files]"}, ECHO),
    # a second memory titled with a timestamp, a number, or nothing
    ([made("remember", REMEMBERED, text="We use SQLite.")], "remember", {"text": "Port 8080.", "title": "10:30"},
     TIMESTAMP),
    ([made("remember", text="We use SQLite.", title="2017-3-15")], "remember", {"text": "Port 8080."}, TIMESTAMP),
    # the same target with trivial changes
    ([made("recall", query="Database choice")], "recall", {"query": "database choice?"}, NEAR),
    ([made("remember", text="We use SQLite.", title="db")], "remember", {"text": "we use sqlite", "title": "DB"}, NEAR),
    ([made("remember", text="We use SQLite, in todo.db.", title="db")], "remember",
     {"text": "We use SQLite, in todo.db", "title": "database"}, NEAR),
    ([made("write_file", path="todo.py", content="print('todo list')\n" * 20)], "write_file",
     {"path": "./todo.py", "content": "print('todo list')\n" * 19 + "print('todo')\n"}, NEAR),
    ([made("remember", text="Routes: GET /todos, POST /todos, DELETE /todos/{id}", title="routes")], "remember",
     {"text": "Routes: GET /todos, POST /todos, DELETE /todos/<id>", "title": "routes"}, NEAR),
])
def test_a_call_that_repeats_an_earlier_one_is_found_with_its_kind(earlier, tool, arguments, kind):
    repeat = find_repeat(tool, arguments, "", earlier)
    assert repeat is not None and repeat.kind == kind
    assert earlier[repeat.of].tool == tool


@pytest.mark.parametrize("earlier, tool, arguments", [
    # another target, or the same tool for other work
    ([made("recall", query="database")], "recall", {"query": "routes"}),
    ([made("recall", query="database")], "recall", {"query": "database", "agent": "me"}),
    ([made("read_file", path="a.py", max_lines=200)], "read_file", {"path": "a.py", "max_lines": 2000}),
    # the same title adds to a memory: another text is new
    ([made("remember", text="We use SQLite.", title="db")], "remember", {"text": "The file is todo.db.", "title": "db"}),
    # a file fixed after running it: something ran in between, and code counts to the character
    ([made("write_file", path="a.py", content="if x == 1\n    y()\n"), made("run_python", "SyntaxError", code="import a")],
     "write_file", {"path": "a.py", "content": "if x == 1:\n    y()\n"}),
    # two empty files are two files
    ([made("write_file", path="pkg/__init__.py", content="")], "write_file", {"path": "tests/__init__.py", "content": ""}),
    # a file read after a listing named it: another tool, and a long result may name what to read next
    ([made("list_files", "todo.py (12 bytes)", directory="")], "read_file", {"path": "todo.py"}),
    ([made("read_file", "import x\nOPEN = 'b.py'\n" + "# more\n" * 60, path="a.py")], "read_file", {"path": "b.py"}),
    # the same title again adds to that memory: the title quoted in the result was the call's own
    ([made("remember", "Remembered as 'db' (2025-01-01).", text="We use SQLite.", title="db")], "remember",
     {"text": "The file is todo.db.", "title": "db"}),
    # a first memory without a title is not a repeat of anything
    ([made("recall", query="database")], "remember", {"text": "We use SQLite."}),
    # a titled memory after an untitled one
    ([made("remember", REMEMBERED, text="We use SQLite.")], "remember", {"text": "Port 8080.", "title": "port"}),
])
def test_a_call_for_new_work_is_not_a_repeat(earlier, tool, arguments):
    assert find_repeat(tool, arguments, "", earlier) is None


def test_an_untitled_memory_after_a_failed_one_is_not_a_timestamp_repeat():
    earlier = [made("remember", "ERROR: text is empty; nothing to remember", ok=False, text=" ")]
    assert find_repeat("remember", {"text": "We use SQLite."}, "", earlier) is None


def test_arguments_that_did_not_parse_repeat_only_the_same_text():
    earlier = [Made("remember", None, '{"text": "the ledger', "ERROR: not JSON", False)]
    assert find_repeat("remember", None, '{"text": "the ledger', earlier).kind == SAME
    assert find_repeat("remember", None, '{"text": "the journal', earlier) is None


@pytest.mark.parametrize("text, stamp", [("152543", True), ("2017-3-15", True), ("10:30", True),
                                         ("2025-01-01T10:30:00Z", True), ("db choice", False), ("v2 schema", False),
                                         ("", False), ("--", False)])
def test_timestamps_are_digits_and_separators(text, stamp):
    assert is_timestamp(text) is stamp
