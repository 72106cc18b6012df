"""Tools are gated twice (not offered, and refused when called
anyway); custom tools with the seed's decorator are offered and run."""

import re
from pathlib import Path

import pytest

from azclaw import Agent, ToolRegistry, build_default_registry
from azclaw.memory import parse_entries
from fakellm import call, calls, text
from helpers import journal, memory_file, orchestrator, team

EVERYONE = {"recall", "remember", "read_file", "list_files"}
WRITER_ONLY = {"write_file", "run_python"}


def test_readers_are_offered_four_tools_and_writers_six(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "reader", "writer", writers=("writer",))).run(max_rounds=1)
    assert set(fake.chats_of("reader")[0].tool_names) == EVERYONE
    assert set(fake.chats_of("writer")[0].tool_names) == EVERYONE | WRITER_ONLY


def test_system_prompt_lists_only_the_tools_offered(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "reader", "writer", writers=("writer",))).run(max_rounds=1)
    assert "write_file(" not in fake.chats_of("reader")[0].system
    assert "write_file(" in fake.chats_of("writer")[0].system


@pytest.mark.parametrize("name, args", [
    ("write_file", {"path": "pwned.txt", "content": "should not exist"}),
    ("run_python", {"code": "open('pwned.txt', 'w').write('should not exist')"}),
])
def test_reader_calling_a_writer_tool_gets_an_error_and_nothing_happens(fake_llm, workdir, name, args):
    fake = fake_llm(per_agent={"reader": [call(name, args), text("ok")]})
    orch = orchestrator(team(fake.url, "reader", "writer", writers=("writer",)))
    orch.run(max_rounds=1)

    [result] = fake.chats_of("reader")[1].tool_results
    assert result.startswith("ERROR"), result
    assert name in result
    assert list(workdir.rglob("pwned.txt")) == []
    assert orch.stats.files_written == 0


def test_tools_list_narrows_what_an_agent_is_offered_and_may_call(fake_llm, workdir):
    fake = fake_llm(per_agent={"w": [call("write_file", {"path": "a.txt", "content": "x"}), text("ok")]})
    agent = Agent("w", endpoint=fake.url, can_write=True, tools=["recall", "read_file"], retries=0)
    orchestrator([agent]).run(max_rounds=1)
    assert set(fake.chats_of("w")[0].tool_names) == {"recall", "read_file"}
    assert fake.chats_of("w")[1].tool_results[0].startswith("ERROR")
    assert not (workdir / "output" / "a.txt").exists()


@pytest.mark.parametrize("only", [["write_file", "recall"], ["run_python"]])
def test_tools_list_never_widens_a_readers_tools(fake_llm, only):
    fake = fake_llm()
    orchestrator([Agent("r", endpoint=fake.url, tools=only, retries=0)]).run(max_rounds=1)
    assert not WRITER_ONLY & set(fake.chats_of("r")[0].tool_names)


def test_writer_writes_into_the_output_folder(fake_llm, workdir):
    fake = fake_llm(per_agent={"writer": [call("write_file", {"path": "src/app.py", "content": "print(1)\n"}),
                                          text("written")]})
    orch = orchestrator(team(fake.url, "writer", writers=("writer",)))
    orch.run(max_rounds=1)
    assert (workdir / "output" / "src" / "app.py").read_text() == "print(1)\n"
    assert not fake.chats_of("writer")[1].tool_results[0].startswith("ERROR")


@pytest.mark.parametrize("path", ["../escape.txt", "/tmp/azclaw-abs-escape.txt", "sub/../../escape.txt"])
def test_writer_cannot_write_outside_the_output_folder(fake_llm, workdir, path):
    fake = fake_llm(per_agent={"writer": [call("write_file", {"path": path, "content": "x"}), text("ok")]})
    orchestrator(team(fake.url, "writer", writers=("writer",))).run(max_rounds=1)
    assert fake.chats_of("writer")[1].tool_results[0].startswith("ERROR")
    assert not (workdir / "escape.txt").exists() and not Path("/tmp/azclaw-abs-escape.txt").exists()


@pytest.mark.parametrize("reply, problem", [
    (call("no_such_tool", {}), "no_such_tool"),
    (call("recall", '{"query": '), "JSON"),
    (call("read_file", {"nope": 1}), "nope"),
    (call("remember", {"title": "x"}), "text"),
])
def test_model_mistakes_become_error_results_and_the_round_goes_on(fake_llm, reply, problem):
    fake = fake_llm(per_agent={"alice": [reply, text("RECOVERED-3")]})
    orch = orchestrator(team(fake.url, "alice", "bob"))
    orch.run(max_rounds=2)
    # a malformed call is not replayed as a tool call: its error comes as a message
    [result] = fake.chats_of("alice")[1].tool_results or [fake.chats_of("alice")[1].last["content"]]
    assert "ERROR" in result and problem in result
    assert "RECOVERED-3" in [r for r in fake.chats_of("bob") if r.round == 2][0].user
    assert orch.stats.errors == 0, "a model's mistake is not a run error"


def test_remembering_a_text_already_stored_says_so_and_stores_nothing(fake_llm, workdir):
    same = {"text": "We use SQLite.", "title": "db"}
    fake = fake_llm(per_agent={"alice": [call("remember", same), text("stored"), call("remember", same),
                                         text("stored again")]})
    orch = orchestrator(team(fake.url, "alice"))
    orch.run(max_rounds=2)
    again = fake.chats_of("alice")[3].tool_results[0]
    assert again.startswith("Already remembered as 'db'") and "nothing new" in again
    effects = [u["effect"] for e in journal(orch.journal_path) if e["event"] == "turn" for u in e["calls"]]
    assert [(e["target"], e["status"]) for e in effects] == [("db", "new"), ("db", "repeat")]
    stored = parse_entries(memory_file(workdir / "agents" / "alice", "alice", "db").read_text())
    assert [(e.text, e.round) for e in stored] == [("We use SQLite.", 1)]  # one entry, from round 1


# -- custom tools ------------------------------------------------------------

def make_registry(seen: list):
    registry = build_default_registry()

    @registry.tool("lookup", "Look a word up in the glossary.", {"q": "string"})
    def lookup(q, _ctx=None):
        seen.append((q, _ctx.agent if _ctx else None))
        return f"GLOSSARY[{q}] for {_ctx.agent if _ctx else 'nobody'}"

    return registry, lookup


def test_custom_tool_is_offered_with_its_schema_and_runs_with_context(fake_llm):
    seen = []
    registry, _ = make_registry(seen)
    fake = fake_llm(per_agent={"alice": [call("lookup", {"q": "idempotent"}), text("ok")]})
    orchestrator(team(fake.url, "alice", "bob"), registry=registry).run(max_rounds=1)

    first = fake.chats_of("alice")[0]
    assert "lookup" in first.tool_names and "lookup" in fake.chats_of("bob")[0].tool_names
    schema = next(t for t in first.body["tools"] if t["function"]["name"] == "lookup")["function"]
    assert schema["description"] == "Look a word up in the glossary."
    assert schema["parameters"]["properties"] == {"q": {"type": "string"}}
    assert schema["parameters"]["required"] == ["q"]
    assert seen == [("idempotent", "alice")]
    assert fake.chats_of("alice")[1].tool_results == ["GLOSSARY[idempotent] for alice"]


def test_decorated_function_stays_directly_callable():
    seen = []
    _, lookup = make_registry(seen)
    assert lookup("direct") == "GLOSSARY[direct] for nobody"
    assert lookup.__name__ == "lookup"
    assert seen == [("direct", None)]


def test_custom_tool_on_a_fresh_registry_is_the_only_tool_offered(fake_llm):
    registry = ToolRegistry()

    @registry.tool("ping", "Answer pong.", {})
    def ping():
        return "pong"

    fake = fake_llm(per_agent={"alice": [call("ping"), text("ok")]})
    orchestrator(team(fake.url, "alice"), registry=registry).run(max_rounds=1)
    assert fake.chats_of("alice")[0].tool_names == ["ping"]
    assert fake.chats_of("alice")[1].tool_results == ["pong"]


def test_writer_only_custom_tool_is_not_offered_to_readers(fake_llm):
    registry = build_default_registry()

    @registry.tool("deploy", "Deploy the build.", {"target": "string"}, writer_only=True)
    def deploy(target, _ctx=None):
        return "deployed"

    fake = fake_llm()
    orchestrator(team(fake.url, "reader", "writer", writers=("writer",)), registry=registry).run(max_rounds=1)
    assert "deploy" not in fake.chats_of("reader")[0].tool_names
    assert "deploy" in fake.chats_of("writer")[0].tool_names


def test_a_custom_tool_that_raises_gives_the_model_an_error(fake_llm):
    registry = build_default_registry()

    @registry.tool("boom", "Always fails.", {"x": "string"})
    def boom(x):
        raise RuntimeError("kaboom-77")

    fake = fake_llm(per_agent={"alice": [call("boom", {"x": "1"}), text("ok")]})
    orchestrator(team(fake.url, "alice"), registry=registry).run(max_rounds=1)
    [result] = fake.chats_of("alice")[1].tool_results
    assert result.startswith("ERROR") and "kaboom-77" in result


def test_read_file_reads_the_source_folders(fake_llm, workdir):
    (workdir / "src").mkdir()
    (workdir / "src" / "notes.md").write_text("line one\nline two\nline three\n")
    fake = fake_llm(per_agent={"alice": [calls(("read_file", {"path": "notes.md", "max_lines": 2})), text("ok")]})
    orchestrator(team(fake.url, "alice"), source_dirs=["src"]).run(max_rounds=1)
    [result] = fake.chats_of("alice")[1].tool_results
    assert "line one\nline two" in result and "line three" not in result


def test_remember_under_an_existing_title_adds_a_dated_entry_and_recall_shows_the_newest_first(fake_llm, workdir):
    fake = fake_llm(per_agent={"alice": [
        call("remember", {"text": "We store data in SQLite.", "title": "storage"}), text("r1"),
        call("remember", {"text": "We store data in PostgreSQL now.", "title": "storage"}), text("r2"),
        call("recall", {"query": "storage"}), text("r3")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=3)

    content = memory_file(workdir / "agents" / "alice", "alice", "storage").read_text(encoding="utf-8")
    entries = parse_entries(content)
    assert [(e.text, e.agent, e.round) for e in entries] == [("We store data in SQLite.", "alice", 1),
                                                            ("We store data in PostgreSQL now.", "alice", 2)]
    assert all(e.when is not None for e in entries) and content.count("[stored by alice in round ") == 2
    [first] = fake.chats_of("alice")[1].tool_results
    assert re.fullmatch(r"Remembered as 'storage' \(round 1, [-0-9]{10}\)\.", first)
    [stored] = fake.chats_of("alice")[3].tool_results
    assert stored.startswith("Remembered as 'storage' (round 2, ") and "the newest of its 2 entries" in stored
    [found] = fake.chats_of("alice")[5].tool_results
    assert re.search(r"\n## storage \(by alice, round 2, [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}\)\n"
                     r"We store data in PostgreSQL now\.\n"
                     r"earlier \(by alice, round 1, [-0-9: ]+\): We store data in SQLite\.$", found), found


@pytest.mark.parametrize("mode", ["native", "constrained"])
def test_recalls_agent_is_one_of_the_team_or_me_in_every_schema(fake_llm, mode):
    import json

    def storing(request):  # something to recall first: a constrained step offers recall only then
        if "Result of remember" in json.dumps(request.messages) or request.tool_results:
            return text(json.dumps({"tool": "reply", "arguments": {"message": "ok"}}) if mode == "constrained" else "ok")
        args = {"text": "We use SQLite.", "title": "db"}
        return text(json.dumps({"tool": "remember", "arguments": args})) if mode == "constrained" else call("remember", args)

    fake = fake_llm(responder=storing)
    orchestrator(team(fake.url, "architect", "developer", tool_mode=mode)).run(max_rounds=1)
    recalls = []
    for request in fake.chats:
        if mode == "native":
            recalls += [t["function"]["parameters"] for t in request.body["tools"] if t["function"]["name"] == "recall"]
        else:
            schema = request.body["response_format"]["json_schema"]["schema"]
            recalls += [a["properties"]["arguments"] for a in schema.get("anyOf", [schema])
                        if a["properties"]["tool"]["enum"] == ["recall"]]
    assert len(recalls) >= 3
    for recall in recalls:
        assert recall["properties"]["agent"]["enum"] == ["architect", "developer", "me"], json.dumps(recall)
        assert "agent" not in recall["required"]


def test_recall_of_someone_not_in_the_team_names_the_choices(fake_llm):
    fake = fake_llm(script=[call("recall", {"query": "db", "agent": "customers"}), text("ok")])
    orchestrator(team(fake.url, "architect", "developer")).run(max_rounds=1)
    assert fake.chats[1].tool_results[0] == ("ERROR: unknown agent 'customers'; agent is one of architect, developer "
                                             "or \"me\", or leave it out to search everyone's memories")


def test_a_team_parameter_that_is_not_a_parameter_is_refused_at_declaration():
    from azclaw import ConfigError
    registry = ToolRegistry()
    with pytest.raises(ConfigError, match="tool 'ask': team_params names 'who', which is not a parameter"):
        @registry.tool("ask", "Ask a teammate.", {"question": "string"}, team_params=("who",))
        def ask(question):
            return question


def test_a_custom_tool_with_a_team_parameter_is_offered_the_team(fake_llm):
    registry = build_default_registry()

    @registry.tool("ask", "Ask a teammate a question.", {"who": "string", "question": "string"}, team_params=("who",))
    def ask(who, question):
        return f"{who} says: yes"

    fake = fake_llm()
    orchestrator(team(fake.url, "architect", "developer"), registry=registry).run(max_rounds=1)
    ask_schema = next(t["function"]["parameters"] for t in fake.chats[0].body["tools"] if t["function"]["name"] == "ask")
    assert ask_schema["properties"]["who"] == {"type": "string", "enum": ["architect", "developer", "me"]}
    assert registry.get("ask").params["who"] == {"type": "string"}, "the registry's tool is not changed"
