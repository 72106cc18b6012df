"""Tool-call modes through the real
HTTP path; auto ends up working against a server that only supports native
calls and against one that only answers well when its output is constrained;
a team per agent; a context overflow recovers."""

import json

import pytest

from azclaw import Agent, ConfigError, Orchestrator
from azclaw.team import load_team, parse_agents
from fakellm import Reply, call, overflow, text
from azclaw.memory import parse_entries
from helpers import journal, memory_file, orchestrator, team


def constrained_only(request):
    """A small model: asked freely it writes a broken call; held to a schema it fills it in."""
    body = request.body or {}
    if "response_format" not in body:
        return call("remember", '{"text": "the ledger uses')  # cut-off JSON arguments
    done = any("Result of remember" in (m.get("content") or "") for m in request.messages)
    if done:
        return text(json.dumps({"tool": "reply", "arguments": {"message": "Stored the ledger format."}}))
    return text(json.dumps({"tool": "remember", "arguments": {"text": "Ledger: fixed-width, 80 columns.",
                                                              "title": "ledger"}}))


def test_auto_switches_an_agent_to_constrained_when_its_native_calls_do_not_parse(fake_llm, workdir):
    fake = fake_llm(responder=constrained_only)
    orch = orchestrator(team(fake.url, "architect"))
    orch.run(max_rounds=2)
    assert [e.text for e in parse_entries(memory_file("agents/architect", "architect", "ledger").read_text())] == ["Ledger: fixed-width, 80 columns."]
    first, second, *rest = fake.chats
    assert "tools" in first.body and "response_format" not in first.body
    assert all("response_format" in r.body and "tools" not in r.body for r in [second, *rest])
    assert "tool_calls" not in json.dumps(second.messages), "a malformed call is never replayed as tool_calls"
    events = journal(workdir / "logs" / "task_journal.jsonl")
    [switch] = [e for e in events if e["event"] == "tool_mode"]
    assert (switch["agent"], switch["mode"], switch["round"]) == ("architect", "constrained", 1)
    assert "does not parse" in switch["reason"]
    turns = [e for e in events if e["event"] == "turn"]
    assert [t["mode"] for t in turns] == ["constrained", "constrained"]
    assert turns[-1]["text"] == "Stored the ledger format."
    # round 2 starts constrained, with the instructions in the system prompt's stable part
    round2 = [r for r in fake.chats if r.round == 2][0]
    assert '"tool"' in round2.system and round2.system.index('"tool"') < round2.system.index("Current round")


def test_auto_stays_native_against_a_server_with_native_tool_calls(fake_llm, workdir):
    fake = fake_llm(script=[call("remember", {"text": "Use SQLite.", "title": "db"}), text("done")])
    orch = orchestrator(team(fake.url, "architect"))
    orch.run(max_rounds=1)
    assert [e.text for e in parse_entries(memory_file("agents/architect", "architect", "db").read_text())] == ["Use SQLite."]
    assert all("response_format" not in r.body for r in fake.chats)
    assert not [e for e in journal(workdir / "logs" / "task_journal.jsonl") if e["event"] == "tool_mode"]


def test_text_mode_describes_the_calls_and_sends_no_tools_field(fake_llm):
    fake = fake_llm(script=[text('<tool_call>{"name": "remember", "arguments": {"text": "T", "title": "t"}}'
                                 '</tool_call>'), text("done")], )
    orch = orchestrator(team(fake.url, "architect", tool_mode="text"))
    orch.run(max_rounds=1)
    assert all("tools" not in r.body for r in fake.chats)
    assert "<tool_call>" in fake.chats[0].system
    assert fake.chats[1].last["content"].startswith("Result of remember:")


def test_a_constrained_turn_may_answer_at_its_first_step(fake_llm, workdir):
    fake = fake_llm(script=[text(json.dumps({"tool": "reply", "arguments": {"message": "Nothing to look up yet."}}))])
    orch = orchestrator(team(fake.url, "architect", tool_mode="constrained"))
    orch.run(max_rounds=1)
    [request] = fake.chats
    assert "reply" in alternatives(request)
    [turn] = [e for e in journal(workdir / "logs" / "task_journal.jsonl") if e["event"] == "turn"]
    assert turn["text"] == "Nothing to look up yet." and turn["calls"] == []


def test_a_constrained_step_offers_only_tools_that_could_do_something_now(fake_llm, workdir):
    def scripted(request):
        if "Result of remember" not in json.dumps(request.messages):
            return text(json.dumps({"tool": "remember", "arguments": {"text": "We use SQLite.", "title": "db"}}))
        return text(json.dumps({"tool": "reply", "arguments": {"message": "Stored."}}))
    fake = fake_llm(responder=scripted)
    orchestrator(team(fake.url, "architect", tool_mode="constrained")).run(max_rounds=1)
    first, second = fake.chats
    # an empty project: nothing stored to recall, no file to read or list
    assert alternatives(first) == ["remember", "reply"]
    assert alternatives(second) == ["recall", "remember", "reply"]
    # the system prompt still lists every tool: it stays the same from step to step
    assert "read_file(" in first.system and "list_files(" in first.system
    (workdir / "src").mkdir()
    (workdir / "src" / "ledger.cbl").write_text("IDENTIFICATION DIVISION.\n")
    fake = fake_llm(responder=scripted)
    orchestrator(team(fake.url, "architect", tool_mode="constrained"), source_dirs=["src"],
                 agents_dir="agents2", log_dir="logs2").run(max_rounds=1)
    assert alternatives(fake.chats[0]) == ["remember", "read_file", "list_files", "reply"]


def test_the_last_constrained_step_may_only_answer(fake_llm):
    fake = fake_llm(responder=lambda r: text(json.dumps({"tool": "recall", "arguments": {"query": f"q{len(r.messages)}"}})))
    orch = orchestrator(team(fake.url, "architect", tool_mode="constrained"), max_tool_steps=2)
    orch.run(max_rounds=1)
    names = [alternatives(r) for r in fake.chats]
    assert "remember" in names[0] and "reply" in names[0]
    assert names[-1] == ["reply"]


def alternatives(request) -> list[str]:
    schema = request.body["response_format"]["json_schema"]["schema"]
    return [alt["properties"]["tool"]["enum"][0] for alt in schema.get("anyOf", [schema])]


def prose(request):
    """A model behind a server that drops the tools field: it only ever writes prose."""
    if "response_format" in request.body:
        return text(json.dumps({"tool": "remember", "arguments": {"text": "Plan: SQLite.",
                                                                  "title": f"plan {request.round}"}})
                    if "Result of remember" not in json.dumps(request.messages) else
                    json.dumps({"tool": "reply", "arguments": {"message": "Stored the plan."}}))
    return text(f"I think we should plan the app carefully in round {request.round}.")


def test_auto_moves_a_model_that_writes_prose_to_text_and_then_to_constrained_calls(fake_llm, workdir):
    fake = fake_llm(responder=prose)
    orchestrator(team(fake.url, "architect")).run(max_rounds=5)
    by_round = {n: [r for r in fake.chats if r.round == n] for n in range(1, 6)}
    assert all(r.offers_tools and "<tool_call>" not in r.system for n in (1, 2) for r in by_round[n])
    assert all(not r.offers_tools and "<tool_call>" in r.system for n in (3, 4) for r in by_round[n])
    assert all("response_format" in r.body and "<tool_call>" not in r.system for r in by_round[5])
    events = journal(workdir / "logs" / "task_journal.jsonl")
    moves = [(e["round"], e["mode"], e["reason"]) for e in events if e["event"] == "tool_mode"]
    assert moves == [(2, "text", "2 turns in a row without a tool call, tools offered"),
                     (4, "constrained", "2 turns in a row without a tool call, tools offered")]
    turns = [e for e in events if e["event"] == "turn"]
    assert [t["mode"] for t in turns] == ["native", "native", "text", "text", "constrained"]
    assert turns[-1]["tools"] == {"remember": 1} and turns[-1]["text"] == "Stored the plan."
    log = (workdir / "logs" / "task.log").read_text()
    assert log.count("tool calls now go as text") == 1 and log.count("tool calls now go constrained") == 1


def test_auto_moves_to_constrained_when_a_native_reply_is_cut_off_without_a_call(fake_llm, workdir):
    fake = fake_llm(script=[Reply(text="Let me think about the plan " * 20, finish_reason="length")],
                    default=json.dumps({"tool": "reply", "arguments": {"message": "Planned."}}))
    orchestrator(team(fake.url, "architect")).run(max_rounds=2)
    assert fake.chats[0].offers_tools and all("response_format" in r.body for r in fake.chats[1:])
    events = journal(workdir / "logs" / "task_journal.jsonl")
    [move] = [e for e in events if e["event"] == "tool_mode"]
    assert (move["round"], move["mode"], move["reason"]) == (1, "constrained",
                                                             "a reply cut off at max_tokens without a tool call")
    turns = [e for e in events if e["event"] == "turn"]
    assert turns[0]["mode"] == "native" and turns[0]["text"].startswith("Let me think")
    assert turns[1]["text"] == "Planned."


def test_auto_leaves_a_model_alone_once_its_calls_came_through(fake_llm, workdir):
    fake = fake_llm(script=[call("remember", {"text": "Use SQLite.", "title": "db"}), text("Stored the db choice.")],
                    default="Nothing to add this round.")
    orchestrator(team(fake.url, "architect")).run(max_rounds=4)
    assert all(r.offers_tools for r in fake.chats)
    assert not [e for e in journal(workdir / "logs" / "task_journal.jsonl") if e["event"] == "tool_mode"]


@pytest.mark.parametrize("mode", ["native", "text"])
def test_a_fixed_tool_mode_never_moves(fake_llm, workdir, mode):
    fake = fake_llm(default="I think we should plan the app carefully.")
    orchestrator(team(fake.url, "architect", tool_mode=mode)).run(max_rounds=4)
    assert all(("<tool_call>" in r.system) == (mode == "text") and r.offers_tools == (mode == "native")
               for r in fake.chats)
    assert not [e for e in journal(workdir / "logs" / "task_journal.jsonl") if e["event"] == "tool_mode"]


def test_a_context_overflow_is_cut_to_the_servers_limit_and_sent_once_more(fake_llm, workdir):
    from azclaw import Topic
    opening = "Plan it. " + "Background. " * 4000  # ~48,000 characters: over a 4,096-token context
    fake = fake_llm(script=[overflow("llama.cpp", n_ctx=4096, prompt=12000), text("planned")])
    topic = Topic.from_dict({"title": "Plan", "initial_prompt": opening}, name="t")
    orch = Orchestrator([Agent("architect", endpoint=fake.url, retries=0, max_tokens=512)], topic=topic,
                        verbose=False)
    stats = orch.run(max_rounds=1)
    assert stats.errors == 0 and orch.history[-1].text == "planned"
    first, second = fake.chats
    assert len(json.dumps(second.messages)) < (4096 - 512) * 3 + 500 < len(json.dumps(first.messages))
    assert "cut to fit the model's context" in second.user
    assert "the server's context is 4096 tokens" in (workdir / "logs" / "t.log").read_text()


def test_a_team_per_agent_from_the_agents_spec(fake_llm, azclaw):
    fake = fake_llm(models=[{"id": "qwen3:8b"}, {"id": "small"}])
    proc = azclaw("run", "--task", "x", "--max-rounds", "1", "--endpoint", fake.url,
                  "--agents", f"planner@qwen3:8b,coder/read@small:{fake.url}")
    assert proc.returncode == 0, proc.stderr
    assert [(r.agent, r.body["model"]) for r in fake.chats] == [("planner", "qwen3:8b"), ("coder", "small")]
    assert "write_file" not in fake.chats_of("coder")[0].tool_names


def test_a_team_file_gives_each_agent_its_role_model_limits_and_mode(fake_llm, azclaw, workdir):
    fake = fake_llm(models=[{"id": "m1"}])  # the tester's model "default" is the one listed
    (workdir / "team.json").write_text(json.dumps({"agents": [
        {"name": "planner", "role": "You plan the work in small steps.", "model": "m1", "max_tokens": 300},
        {"name": "tester", "write": True, "tool_mode": "constrained", "endpoint": fake.url}]}))
    proc = azclaw("run", "--task", "x", "--max-rounds", "1", "--endpoint", fake.url, "--team", "team.json")
    assert proc.returncode == 0, proc.stderr
    planner, tester = fake.chats_of("planner")[0], fake.chats_of("tester")[0]
    assert "You plan the work in small steps." in planner.system
    assert (planner.body["model"], planner.body["max_tokens"]) == ("m1", 300)
    assert "response_format" in tester.body and "write_file" in json.dumps(tester.body["response_format"])


@pytest.mark.parametrize("content, field", [
    ({"agents": []}, "agents: expected a list"),
    ({"agents": [{"name": "a", "tool_mode": "psychic"}]}, "agents[0].tool_mode: 'psychic' is not one of"),
    ({"agents": [{"name": "a", "max_tokens": "lots"}]}, "agents[0].max_tokens: expected a whole number"),
    ({"agents": [{"name": "a", "endpoint": "ftp://x"}]}, "agents[0].endpoint: expected an http(s):// URL"),
    ({"agents": [{"role": "x"}]}, "agents[0].name: expected the agent's name"),
    ({"agents": [{"name": "a", "colour": "red"}]}, "agents[0].colour: unknown field"),
])
def test_a_bad_team_file_is_one_error_naming_the_field(workdir, content, field):
    (workdir / "team.json").write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        load_team(workdir / "team.json")


def test_the_agents_spec_reads_markers_models_with_colons_and_fail_over_urls():
    a, b = parse_agents("dev@qwen3:8b:http://h:1|http://h:2,reviewer/write")
    assert (a.name, a.can_write, a.model, a.endpoint) == ("dev", True, "qwen3:8b", ["http://h:1", "http://h:2"])
    assert (b.name, b.can_write, b.model, b.endpoint) == ("reviewer", True, "", [])


def test_an_unknown_tool_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="tool_mode: 'json' is not one of auto, native, text, constrained"):
        Agent("a", tool_mode="json")


def test_reply_problems_become_warning_lines(fake_llm, workdir):
    fake = fake_llm(script=[Reply(text="<think>hmm", finish_reason="length")])
    orchestrator(team(fake.url, "architect")).run(max_rounds=1)
    assert "architect: reply cut off at max_tokens 2048" in (workdir / "logs" / "task.log").read_text()
