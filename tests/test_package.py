"""One Turn record for the loop, the journal, status and report; a
library that configures no logging; tools that check their declaration; the
default team in the library; topics whose source files are missing."""

import json
import logging

import pytest

from azclaw import Agent, ConfigError, Orchestrator, TeamMemory, ToolRegistry, Topic, default_team
from azclaw.runlog.reader import RunLog
from azclaw.tools.registry import Effect
from azclaw.turn import ToolUse, Turn
from azclaw.cli import TeamConfig, make_parser
from azclaw.runlog.status import format_status, read_status
from fakellm import call, calls, text
from helpers import orchestrator, team

PROBES = {"title": "Probed", "coherence_probes": [{"after_round": 1, "question": "Which database?",
                                                   "expect": ["sqlite"]}]}


def test_the_summary_status_and_the_journal_add_up_the_same_turns_probes_included(fake_llm, workdir):
    fake = fake_llm(per_agent={
        "arch": [call("remember", {"text": "We use SQLite.", "title": "db"}), text("designed"),
                 call("recall", {"query": "database"}), text("We chose SQLite.")],
        "dev": [calls(("write_file", {"path": "a.py", "content": "x = 1"}), ("list_files", {})), text("wrote"),
                call("recall", {"query": "db"}), text("sqlite, I think")]})
    orch = orchestrator(team(fake.url, "arch", "dev", writers=("dev",)), topic=Topic.from_dict(PROBES, name="p"))
    stats = orch.run(max_rounds=1)
    status = read_status("logs")
    assert stats.tool_calls == 5  # three in the round, two in the probe answers
    for name in ("arch", "dev"):
        live, read = stats.agents[name].to_dict(), status.agents[name].to_dict()
        assert abs(live.pop("seconds") - read.pop("seconds")) < 0.01  # the journal keeps milliseconds
        live.pop("tokens_per_second"), read.pop("tokens_per_second")
        assert live == read, name
    def rows(text):  # the agent table's rows, but tok/s (the journal rounds seconds to milliseconds)
        return [line.split()[:4] + line.split()[5:] for line in text.splitlines()
                if line.split() and line.split()[0] in ("agent", "arch", "dev")]
    assert rows(orch.summary()) == rows(format_status(status)) == rows(stats.table())
    assert rows(stats.table())[1][4:8] == ["2", "1", "0", "0"]  # arch: tools, memories, files, errors
    turns = RunLog.read("logs").turns
    assert [(t.agent, t.tools) for t in turns] == [("arch", {"remember": 1}),
                                                       ("dev", {"write_file": 1, "list_files": 1})]


@pytest.mark.parametrize("line", [
    {"event": "turn", "round": "x", "agent": 5, "tool_calls": [1], "memories": "m", "seconds": "slow",
     "prompt_tokens": 10**400, "empty": "yes"},
    {"event": "turn"},
    {"event": "probe", "round": 2, "agent": "a", "answer": "old-style answer", "prompt_tokens": 3},
])
def test_a_turn_reads_from_any_journal_line_without_raising(line):
    turn = Turn.from_dict(json.loads(json.dumps(line)))
    assert isinstance(turn.round, int) and isinstance(turn.tools, dict) and isinstance(turn.memories, list)
    assert Turn.from_dict(turn.to_dict()).to_dict() == turn.to_dict()


def test_a_turn_written_and_read_back_is_the_same_turn():
    uses = [ToolUse("write_file", '{"path": "a.py"}', "Wrote", effect=Effect("file", "a.py", "created")),
            ToolUse("write_file", '{"path": "/x"}', "ERROR: refused", ok=False),
            ToolUse("remember", '{"text": "t"}', "Remembered", effect=Effect("memory", "m", "new"))]
    turn = Turn("dev", 3, "Build", "done", requests=2, prompt_tokens=100, completion_tokens=20, seconds=2.0,
                context_chars=900, context_tokens=60, calls=uses, errors=["HTTP 500"], truncated=1)
    assert (turn.tools, turn.tool_errors, turn.memories, turn.files) == ({"write_file": 2, "remember": 1}, 1, ["m"],
                                                                         ["a.py"])
    assert Turn.from_dict({"event": "turn", **turn.to_dict()}) == turn


def test_the_library_configures_no_logging_and_a_run_leaves_none_behind(fake_llm, workdir):
    logger = logging.getLogger("azclaw")
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert [type(h).__name__ for h in logger.handlers] == ["NullHandler"]
    fake = fake_llm()
    orchestrator(team(fake.url, "arch")).run(max_rounds=1)
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    assert "[round 1/1] arch" in (workdir / "logs" / "task.log").read_text()


def test_a_tool_that_declares_a_parameter_its_function_lacks_is_refused_at_registration():
    registry = ToolRegistry()
    with pytest.raises(ConfigError, match="tool 'lookup': parameter 'limit' is declared but"):
        @registry.tool("lookup", "Look a thing up.", {"query": "string", "limit": "integer"})
        def lookup(query: str) -> str:
            return query
    assert registry.get("lookup") is None


def test_a_tool_that_crashes_is_an_error_for_the_model_and_a_traceback_for_the_operator(fake_llm, workdir):
    from azclaw import build_default_registry
    registry = build_default_registry()

    @registry.tool("divide", "Divide a by b.", {"a": "number", "b": "number"})
    def divide(a: float, b: float) -> str:
        return str(a / b)

    fake = fake_llm(per_agent={"arch": [call("divide", {"a": 1, "b": 0}), text("ok")]})
    orchestrator(team(fake.url, "arch"), registry=registry).run(max_rounds=1)
    [result] = fake.chats_of("arch")[1].tool_results
    assert result.startswith("ERROR: tool 'divide' failed: ZeroDivisionError")
    log = (workdir / "logs" / "task.log").read_text()
    assert "Traceback (most recent call last)" in log and "return str(a / b)" in log


def test_the_cli_and_the_library_build_the_same_default_team():
    args = make_parser().parse_args(["run", "--task", "x"])
    cli_team = TeamConfig.of(args).team()
    library = default_team()
    assert [(a.name, a.role, a.can_write, a.max_tokens) for a in cli_team] == \
           [(a.name, a.role, a.can_write, a.max_tokens) for a in library]
    assert [a.name for a in library if a.can_write] == ["developer"]


def test_custom_agent_names_follow_the_writer_rule():
    named = default_team(names=["planner", "coder", "tester"])
    assert [(a.name, a.can_write) for a in named] == [("planner", False), ("coder", True), ("tester", False)]


def test_the_orchestrator_takes_the_team_memory_it_is_given(fake_llm, workdir):
    memory = TeamMemory({"arch": workdir / "elsewhere" / "arch"})
    fake = fake_llm(per_agent={"arch": [call("remember", {"text": "Kept elsewhere.", "title": "place"}),
                                        text("ok")]})
    Orchestrator(team(fake.url, "arch"), memory=memory, verbose=False).run(max_rounds=1)
    assert list((workdir / "elsewhere" / "arch").rglob("place.txt"))
    assert not (workdir / "agents").exists()


def test_a_memory_without_a_root_for_an_agent_is_refused(workdir):
    memory = TeamMemory({"arch": workdir / "arch"})
    with pytest.raises(ConfigError, match="no AgentAZAll root for agent 'dev'"):
        Orchestrator([Agent("arch"), Agent("dev")], memory=memory)


def test_a_topic_whose_source_files_no_folder_holds_gets_one_warning_line(fake_llm, azclaw, workdir):
    fake = fake_llm()
    (workdir / "src").mkdir()
    (workdir / "src" / "present.cbl").write_text("x")
    topic = {"title": "T", "phases": [{"name": "P", "rounds": [1, 1], "source_files": ["present.cbl", "gone.cpy"]}]}
    (workdir / "t.json").write_text(json.dumps(topic))
    proc = azclaw("run", "--topic", "t.json", "--endpoint", fake.url, "--source", "src", "--retries", "0")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "no source folder holds" in line]
    assert len(warnings) == 1 and "gone.cpy" in warnings[0] and "present.cbl" not in warnings[0]


def test_the_shipped_cobol_topic_finds_its_bundled_sources(fake_llm, azclaw, workdir):
    fake = fake_llm(script=[call("read_file", {"path": "cbl/ACCTREC.cpy"}), text("read it")])
    proc = azclaw("run", "--topic", "cobol-migration", "--endpoint", fake.url, "--max-rounds", "1",
                  "--retries", "0", "--agents", "architect")
    assert proc.returncode == 0, proc.stderr
    assert "no source folder holds" not in proc.stderr
    [result] = fake.chats[1].tool_results
    assert "PIC" in result and not result.startswith("ERROR")


# -- the import graph ----------------------------------------------------------------

def import_graph():
    """Module -> the azclaw modules it imports (anywhere in the file, lazy imports too)."""
    import ast
    from pathlib import Path
    root = Path(__import__("azclaw").__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = (path, package)
    graph = {}
    for name, (path, package) in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("azclaw"):
                    continue
                for alias in node.names:  # "from . import sandbox" imports a module
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("azclaw")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_package_has_no_import_circle():
    graph = import_graph()
    graph = {m: {t for t in targets if t != "azclaw"} for m, targets in graph.items()}  # the root is checked below
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)
    for module in sorted(graph):
        visit(module)


def test_no_module_imports_the_package_root_and_the_leaf_wings_never_reach_the_centre():
    graph = import_graph()
    assert [m for m, targets in graph.items() if "azclaw" in targets and m != "azclaw.__main__"] == []
    leaves = ("azclaw.client", "azclaw.local", "azclaw.tools", "azclaw.memory")
    shared = {"azclaw.errors", "azclaw.numbers", "azclaw.version", "azclaw.safetext", "azclaw.files"}
    for module, targets in sorted(graph.items()):
        wing = next((w for w in leaves if module == w or module.startswith(w + ".")), None)
        if wing is None:
            continue
        outside = sorted(t for t in targets if t not in shared and not any(t == w or t.startswith(w + ".")
                                                                           for w in leaves))
        assert outside == [], f"{module} reaches into the centre: {outside}"


def test_the_public_names_are_what_a_program_writes():
    import azclaw
    assert len(azclaw.__all__) <= 20
    assert {"Agent", "Orchestrator", "Topic", "RunOptions", "build_default_registry", "ToolRegistry",
            "Stop"} <= set(azclaw.__all__)
    for name in azclaw.__all__:
        assert getattr(azclaw, name) is not None


def test_without_hypothesis_the_property_tests_are_skipped_and_the_rest_still_run(workdir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from helpers import CLI_TIMEOUT, cli_env
    hidden = workdir / "hidden" / "hypothesis"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hypothesis is not installed (hidden by the test)')\n")
    tests = Path(__file__).parent
    path = os.pathsep.join([str(workdir / "hidden"), str(tests.parent), os.environ.get("PYTHONPATH", "")])
    # hypothesis hidden, and its pytest plugin left out, as when it is not installed
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:hypothesispytest", "-p", "no:cacheprovider",
                           "-rs", str(tests / "test_topic.py"), str(tests / "test_client_textcalls.py")],
                          cwd=workdir, env=cli_env(PYTHONPATH=path), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "hypothesis is not installed" in proc.stdout and " skipped" in proc.stdout, proc.stdout[-2000:]
    assert " passed" in proc.stdout
