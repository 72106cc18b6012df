"""Point 6: memory is AgentAZAll text files, shared across the team, read
and written both by the agents' tools and by the ``agentazall`` command."""

import os
import re
import time

import pytest

from azclaw import Agent, TeamMemory
from fakellm import call, calls, text
from helpers import memory_file, orchestrator, team


def test_remember_writes_the_agentazall_memory_file(fake_llm, workdir):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "We use SQLite for storage.",
                                                           "title": "storage-choice"}), text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    path = memory_file(workdir / "agents" / "alice", "alice", "storage-choice")
    assert path.read_text(encoding="utf-8").strip() == "We use SQLite for storage."


def test_agentazall_recall_lists_what_the_agent_remembered(fake_llm, agentazall):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "The wombat service listens on 7311.",
                                                           "title": "wombat-port"}), text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)

    proc = agentazall("agents/alice", "recall", "wombat")
    assert proc.returncode == 0, proc.stderr
    assert "wombat-port" in proc.stdout
    assert "The wombat service listens on 7311." in proc.stdout


def test_memory_stored_with_agentazall_remember_is_found_by_the_recall_tool(fake_llm, agentazall):
    fake = fake_llm(per_agent={"alice": [call("recall", {"query": "quokka"}), text("ok")]})
    orch = orchestrator(team(fake.url, "alice"))  # prepares agents/alice as an AgentAZAll root
    proc = agentazall("agents/alice", "remember", "--text", "Quokka cache expires after 90 s.",
                      "--title", "quokka-cache")
    assert proc.returncode == 0, proc.stderr
    orch.run(max_rounds=1)

    [result] = fake.chats_of("alice")[1].tool_results
    assert "Quokka cache expires after 90 s." in result
    assert "quokka-cache" in result


def test_memory_stored_with_agentazall_before_azclaw_ever_ran_is_found(fake_llm, agentazall):
    proc = agentazall("agents/alice", "remember", "--text", "Numbat ids are UUIDv7.", "--title", "numbat-ids")
    assert proc.returncode == 0, proc.stderr
    fake = fake_llm(per_agent={"alice": [call("recall", {"query": "numbat"}), text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    assert "Numbat ids are UUIDv7." in fake.chats_of("alice")[1].tool_results[0]


def test_recall_finds_teammates_memories_and_names_each_author(fake_llm):
    fake = fake_llm(per_agent={
        "alice": [call("remember", {"text": "Auth tokens live 15 minutes.", "title": "token-ttl"}), text("a")],
        "bob": [call("remember", {"text": "Auth uses argon2 for passwords.", "title": "hashing"}), text("b")],
        "carol": [call("recall", {"query": "auth"}), text("c")],
    })
    orchestrator(team(fake.url, "alice", "bob", "carol")).run(max_rounds=1)

    [result] = fake.chats_of("carol")[1].tool_results
    hits = {}
    for block in result.split("\n## ")[1:]:
        header, _, body = block.partition("\n")
        hits[body.strip()] = header
    assert re.search(r"\balice\b", hits["Auth tokens live 15 minutes."])
    assert re.search(r"\bbob\b", hits["Auth uses argon2 for passwords."])
    assert "bob" not in hits["Auth tokens live 15 minutes."]


def test_recall_of_a_word_nobody_stored_says_so(fake_llm):
    fake = fake_llm(per_agent={"alice": [call("recall", {"query": "zyzzyva"}), text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    [result] = fake.chats_of("alice")[1].tool_results
    assert not result.startswith("ERROR") and "zyzzyva" in result and "##" not in result


def test_empty_recall_is_a_bounded_index_newest_first(fake_llm, workdir):
    fake = fake_llm(per_agent={"alice": [call("recall", {"query": ""}), text("ok")]})
    orch = orchestrator(team(fake.url, "alice", "bob"))
    memory = TeamMemory({"alice": workdir / "agents" / "alice", "bob": workdir / "agents" / "bob"})
    base = time.time() - 1000
    for i in range(100):
        stored = memory.remember("bob" if i % 2 else "alice", f"fact number {i:03d} " + "x" * 200,
                                 f"fact-{i:03d}")
        os.utime(stored.path, (base + i, base + i))  # distinct times: file systems may round them
    orch.run(max_rounds=1)

    [index] = fake.chats_of("alice")[1].tool_results
    assert "100" in index, "the index says how many memories there are"
    entries = [line for line in index.splitlines() if "fact-" in line]
    assert 0 < len(entries) <= 30
    assert "fact-099" in entries[0], "newest first"
    assert "fact-000" not in index
    assert len(index) < 5000
    assert "characters cut" not in index


def test_empty_recall_does_not_grow_with_more_memories(workdir):
    memory = TeamMemory({"alice": workdir / "agents" / "alice"})
    sizes = []
    for total in (50, 150):
        while len(memory.memories()) < total:
            memory.remember("alice", "y" * 300, f"m-{len(memory.memories()):04d}")
        sizes.append(len(memory.recall("").splitlines()))
    assert sizes[0] == sizes[1]


def test_memories_survive_into_a_new_orchestrator(fake_llm):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "Echidna is the codename.", "title": "codename"}),
                                         text("stored"),
                                         call("recall", {"query": "codename"}), text("found")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    orchestrator(team(fake.url, "alice"), log_dir="logs2").run(max_rounds=1)
    assert "Echidna is the codename." in fake.chats_of("alice")[3].tool_results[0]


def test_same_title_twice_appends_like_agentazall(fake_llm, workdir, agentazall):
    fake = fake_llm(per_agent={"alice": [calls(("remember", {"text": "first part", "title": "log"}),
                                               ("remember", {"text": "second part", "title": "log"})),
                                         text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    content = memory_file(workdir / "agents" / "alice", "alice", "log").read_text()
    assert "first part" in content and "second part" in content
    assert "second part" in agentazall("agents/alice", "recall", "second").stdout


@pytest.mark.parametrize("title, file_name", [("API design", "API_design"), ("db/choice", "db_choice"),
                                              ("naïve café", "naïve_café")])
def test_same_title_from_agent_and_agentazall_lands_in_one_file(fake_llm, workdir, agentazall, title, file_name):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "from the agent", "title": title}),
                                         text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    assert agentazall("agents/alice", "remember", "--text", "from a person", "--title", title).returncode == 0
    content = memory_file(workdir / "agents" / "alice", "alice", file_name).read_text(encoding="utf-8")
    assert content.splitlines() == ["from the agent", "from a person"]


def test_agent_root_option_places_its_memory_there(fake_llm, workdir, agentazall):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "Root moved.", "title": "moved"}), text("ok")]})
    orchestrator([Agent("alice", endpoint=fake.url, root="elsewhere/alice-root", retries=0)]).run(max_rounds=1)
    assert memory_file(workdir / "elsewhere" / "alice-root", "alice", "moved").is_file()
    assert not (workdir / "agents" / "alice").exists()
    assert "Root moved." in agentazall("elsewhere/alice-root", "recall", "moved").stdout
