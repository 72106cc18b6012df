"""Memory is AgentAZAll text files, shared across the team, read
and written both by the agents' tools and by the ``agentazall`` command."""

import os
import re
import time

import pytest

from azclaw import Agent, TeamMemory
from azclaw.memory import parse_entries
from fakellm import call, calls, text
from helpers import CLI_TIMEOUT, memory_file, orchestrator, team, turn_requests, wait_for

STAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}"


def test_remember_writes_the_agentazall_memory_file_with_who_stored_it_in_which_round_and_when(fake_llm, workdir):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "We use SQLite for storage.",
                                                           "title": "storage-choice"}), text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    path = memory_file(workdir / "agents" / "alice", "alice", "storage-choice")
    assert re.fullmatch(rf"We use SQLite for storage\.\n\[stored by alice in round 1, {STAMP}; the 1 line above\]",
                        path.read_text(encoding="utf-8"))


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
                                              ("naïve café", "naïve_café"), ("v2.", "v2."),
                                              (" padded ", "_padded_"), ("long" * 40, "long" * 40)])
def test_same_title_from_agent_and_agentazall_lands_in_one_file(fake_llm, workdir, agentazall, title, file_name):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "from the agent", "title": title}),
                                         text("ok")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    assert agentazall("agents/alice", "remember", "--text", "from a person", "--title", title).returncode == 0
    content = memory_file(workdir / "agents" / "alice", "alice", file_name).read_text(encoding="utf-8")
    assert [(e.text, e.agent, e.round) for e in parse_entries(content)] == [("from the agent", "alice", 1),
                                                                            ("from a person", None, None)]


def test_agent_root_option_places_its_memory_there(fake_llm, workdir, agentazall):
    fake = fake_llm(per_agent={"alice": [call("remember", {"text": "Root moved.", "title": "moved"}), text("ok")]})
    orchestrator([Agent("alice", endpoint=fake.url, root="elsewhere/alice-root", retries=0)]).run(max_rounds=1)
    assert memory_file(workdir / "elsewhere" / "alice-root", "alice", "moved").is_file()
    assert not (workdir / "agents" / "alice").exists()
    assert "Root moved." in agentazall("elsewhere/alice-root", "recall", "moved").stdout


# -- team memory that scales and finds the right one ---------------------------------
# Direct tests of TeamMemory: ranking, the derived index noticing outside changes, files never
# touched, concurrency. Large-N timings live in tests/bench_memory.py, not here.

import hashlib  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

from properties import HealthCheck, given, settings, st  # noqa: E402  (hypothesis, or a skip without it)

from azclaw.errors import ConfigError  # noqa: E402
from azclaw.memory import HIT_CHARS, INDEX_ENTRIES, sanitize_title  # noqa: E402
from azclaw.memory.watch import Watcher  # noqa: E402

TEAM = ("alice", "bob", "carol")


def _inotify() -> bool:
    try:
        Watcher().close()
        return True
    except OSError:
        return False


# both ways of noticing outside changes: inotify, and stat polling (its fallback)
WATCH_MODES = [pytest.param(True, id="inotify", marks=pytest.mark.skipif(not _inotify(), reason="no inotify")),
               pytest.param(False, id="polling")]


def team_memory(base: Path, *names: str, **kwargs) -> TeamMemory:
    return TeamMemory({n: base / "agents" / n for n in (names or TEAM)}, **kwargs)


def plant(memory: TeamMemory, agent: str, title: str, text: str, days_ago: int = 0) -> Path:
    """Write a memory file by hand, as a person (or another tool) would."""
    day = (date.today() - timedelta(days=days_ago)).isoformat()
    path = memory.roots[agent].mailbox / day / "remember" / f"{title}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if days_ago:
        stamp = time.time() - days_ago * 86400
        os.utime(path, (stamp, stamp))
    return path


def hit_titles(memory: TeamMemory, query: str, **kwargs) -> list[str]:
    return [m.title for m, _ in memory.search(query, **kwargs)]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".azclaw" not in p.parts}


def test_a_memory_matching_more_query_words_ranks_first(workdir):
    memory = team_memory(workdir)
    memory.remember("alice", "The parser handles yaml files.", "parser")
    memory.remember("bob", "The parser reads yaml and writes json with a streaming encoder.", "encoder")
    memory.remember("carol", "Streaming json encoder, benchmarked against the yaml parser.", "bench")
    assert hit_titles(memory, "streaming json encoder benchmark") == ["bench", "encoder"]
    assert hit_titles(memory, "parser yaml")[0] == "parser", "the title and the shortest text"


def test_rare_words_count_more_than_common_ones(workdir):
    memory = team_memory(workdir, "alice")
    for i in range(30):
        memory.remember("alice", f"The service restarted again, note {i}.", f"restart-{i}")
    memory.remember("alice", "The service froze: a deadlock in the scheduler.", "freeze")
    assert hit_titles(memory, "service deadlock")[0] == "freeze"


def test_a_title_match_outranks_the_same_word_in_a_body(workdir):
    memory = team_memory(workdir)
    memory.remember("alice", "We discussed caching, retries and the rollout plan for next week.", "weekly-sync")
    memory.remember("bob", "Use a write-through policy with a five minute expiry.", "Caching policy")
    assert hit_titles(memory, "caching") == ["Caching_policy", "weekly-sync"]


def test_equal_matches_go_to_the_newer_memory(workdir):
    memory = team_memory(workdir)
    plant(memory, "alice", "release-date", "Version 2 ships on the third.", days_ago=9)
    plant(memory, "bob", "release-date", "Version 2 ships on the tenth.", days_ago=2)
    plant(memory, "carol", "release-date", "Version 2 ships on the fifth.", days_ago=30)
    assert [m.agent for m, _ in memory.search("when does version 2 ship")] == ["bob", "alice", "carol"]
    same_day = [memory.remember("alice", "Staging runs on port 8080.", f"port-{i}") for i in range(3)]
    for i, stored in enumerate(same_day):
        os.utime(stored.path, (time.time() - 100 + i, time.time() - 100 + i))
    assert hit_titles(memory, "staging port") == ["port-2", "port-1", "port-0"]


def test_recall_searches_the_whole_team_and_names_each_author(workdir):
    memory = team_memory(workdir)
    memory.remember("alice", "Tokens expire after 15 minutes.", "token-ttl")
    plant(memory, "bob", "token-signing", "Tokens are signed with Ed25519.", days_ago=3)
    shown = memory.recall("tokens")
    three_days_ago = (date.today() - timedelta(days=3)).isoformat()
    assert re.search(rf"## token-ttl \(by alice, {date.today().isoformat()} [0-9:]{{5}}\)\n"
                     "Tokens expire after 15 minutes.", shown)
    assert re.search(rf"## token-signing \(by a person, in bob's memory, {three_days_ago} [0-9:]{{5}}\)\n"
                     "Tokens are signed with Ed25519.", shown)


def test_recall_can_be_narrowed_to_one_teammate(workdir):
    memory = team_memory(workdir)
    for agent in TEAM:
        memory.remember(agent, f"{agent} prefers tabs for the config files.", "indentation")
    shown = memory.recall("tabs config", agent="bob")
    assert "(by bob," in shown and "(by alice," not in shown and "(by carol," not in shown
    assert [m.agent for m, _ in memory.search("tabs", agent="carol")] == ["carol"]
    assert memory.index("alice").startswith("1 memories (alice: 1)")
    with pytest.raises(ConfigError, match="unknown agent 'dave'; team: alice, bob, carol"):
        memory.recall("tabs", agent="dave")


def test_a_long_memory_is_cut_around_the_words_asked_for(workdir):
    memory = team_memory(workdir, "alice")
    filler = "\n".join(f"Line {i} is about nothing in particular." for i in range(60))
    memory.remember("alice", filler + "\nThe wombat port is 7311.\n" + filler, "long-notes")
    shown = memory.recall("wombat port")
    body = shown.split("\n## long-notes", 1)[1].split("\n", 1)[1]
    assert "The wombat port is 7311." in body
    assert body.startswith("[...] ") and body.endswith(" [...]")
    assert len(body) <= HIT_CHARS + 20


def test_a_query_of_only_stop_words_still_searches(workdir):
    memory = team_memory(workdir, "alice")
    memory.remember("alice", "To be or not to be.", "hamlet")
    assert hit_titles(memory, "to be") == ["hamlet"]
    assert memory.recall("?!") == memory.recall(""), "no words at all: the index"


def test_empty_recall_stays_bounded_with_10000_memories(workdir):
    memory = team_memory(workdir)
    for i in range(10_000):
        day = (date.today() - timedelta(days=1 + i // 100)).isoformat()
        folder = memory.roots[TEAM[i % 3]].mailbox / day / "remember"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note-{i:05d}.txt").write_text(f"Generated note {i}.", encoding="utf-8")
    memory.remember("bob", "Bob's decision: ship on Friday.", "ship-day")
    for i in range(30):
        memory.remember("alice", f"Alice's item {i}.", f"alice-item-{i}")
    index = memory.recall("")
    lines = index.splitlines()
    assert lines[0] == "10031 memories (alice: 3364, bob: 3334, carol: 3333). Newest first:"
    assert "alice-item-29" in lines[1], "newest first"
    assert len(lines) <= INDEX_ENTRIES + 5 and len(index) < 5000
    assert any(ln.startswith("Latest of bob:") and "ship-day" in ln for ln in lines), "each agent's latest"
    assert any(ln.startswith("Latest of carol:") and "note-00098" in ln for ln in lines)
    assert memory.counts() == {"alice": 3364, "bob": 3334, "carol": 3333}


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_memories_stored_by_the_agentazall_cli_are_found_while_azclaw_runs(workdir, agentazall, watch):
    memory = team_memory(workdir, watch=watch)
    memory.remember("alice", "Seed memory.", "seed")
    assert "Seed memory." in memory.recall("seed")  # the index is built and validated
    proc = agentazall("agents/bob", "remember", "--text", "Platypus queue holds 500 jobs.", "--title", "platypus")
    assert proc.returncode == 0, proc.stderr
    assert "## platypus (by a person, in bob's memory," in memory.recall("platypus queue")
    proc = agentazall("agents/alice", "remember", "--text", "Numbat appended by hand.", "--title", "seed")
    assert proc.returncode == 0, proc.stderr
    shown = memory.recall("numbat")
    assert re.search(r"\)\nNumbat appended by hand.\nearlier \(by alice, [-0-9: ]+\): Seed memory.", shown), \
        "an append in place is seen, newest first"
    assert memory.counts() == {"alice": 1, "bob": 1, "carol": 0}


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_files_added_edited_or_deleted_by_a_person_are_noticed(workdir, watch):
    memory = team_memory(workdir, watch=watch)
    old = plant(memory, "alice", "storage", "We store blobs in MinIO.", days_ago=40)
    gone = plant(memory, "bob", "cache", "Redis caches sessions.", days_ago=3)
    assert hit_titles(memory, "minio") == ["storage"] and memory.counts()["bob"] == 1

    old.write_text("We store blobs in Ceph now, no longer in the old object store.", encoding="utf-8")
    gone.unlink()
    plant(memory, "carol", "planted", "Planted by hand: the kiwi flag.", days_ago=12)
    assert hit_titles(memory, "minio") == []
    assert hit_titles(memory, "ceph") == ["storage"]
    assert hit_titles(memory, "redis") == [] and memory.counts() == {"alice": 1, "bob": 0, "carol": 1}
    assert hit_titles(memory, "kiwi") == ["planted"]

    shutil.rmtree(memory.roots["alice"].mailbox / old.parent.parent.name)
    assert memory.counts()["alice"] == 0 and hit_titles(memory, "ceph") == []


@pytest.mark.skipif(not _inotify(), reason="no inotify")
def test_an_edit_within_the_same_clock_tick_is_still_seen(workdir):
    memory = team_memory(workdir, "alice")
    path = plant(memory, "alice", "flag", "alpha")
    assert hit_titles(memory, "alpha") == ["flag"]
    path.write_text("omega", encoding="utf-8")  # same size, likely the same mtime
    assert hit_titles(memory, "omega") == ["flag"] and hit_titles(memory, "alpha") == []


def test_a_new_process_notices_what_changed_while_none_ran(workdir):
    memory = team_memory(workdir)
    kept = memory.remember("alice", "The API uses cursor pagination.", "pagination")
    edited = plant(memory, "bob", "deploys", "Deploys happen on Tuesdays.", days_ago=5)
    memory.recall("pagination")
    memory.close()
    edited.write_text("Deploys happen on Thursdays after the freeze.", encoding="utf-8")
    kept.path.unlink()
    plant(memory, "carol", "late", "Added while azclaw was down: the emu rule.", days_ago=1)
    again = team_memory(workdir)
    assert hit_titles(again, "thursdays") == ["deploys"] and hit_titles(again, "tuesdays") == []
    assert hit_titles(again, "pagination") == [] and hit_titles(again, "emu") == ["late"]


def test_files_azclaw_did_not_write_are_never_modified(workdir, agentazall):
    memory = team_memory(workdir)
    memory.remember("alice", "Written by azclaw.", "ours")
    assert agentazall("agents/bob", "remember", "--text", "Written by the CLI.", "--title", "theirs").returncode == 0
    plant(memory, "carol", "by-hand", "Written by a person.", days_ago=7)
    (memory.roots["carol"].mailbox / "notes.md").write_text("not a memory", encoding="utf-8")
    before = tree_hashes(workdir / "agents")

    memory.remember("alice", "Another azclaw memory.", "ours-too")
    memory.remember("bob", "azclaw's own memory in bob's folder.", "bobs-azclaw")
    for query in ("", "written", "memory"):
        memory.recall(query)
    memory.counts(), memory.memories(), memory.index("bob")
    memory.close()
    team_memory(workdir).recall("person")

    after = tree_hashes(workdir / "agents")
    assert {k: v for k, v in after.items() if k in before} == before
    today = date.today().isoformat()
    assert set(after) - set(before) == {f"alice/data/mailboxes/alice/{today}/remember/ours-too.txt",
                                        f"bob/data/mailboxes/bob/{today}/remember/bobs-azclaw.txt"}


def test_the_index_lives_beside_the_agents_and_is_disposable(workdir):
    memory = team_memory(workdir)
    memory.remember("alice", "The quokka service owns billing.", "owners")
    assert Path(memory.index_path) == workdir / "agents" / ".azclaw" / "memory-index.sqlite3"
    assert hit_titles(memory, "quokka") == ["owners"]
    memory.close()
    Path(memory.index_path).write_bytes(b"this is not a database" * 100)  # a broken cache
    for suffix in ("-wal", "-shm"):
        Path(memory.index_path + suffix).unlink(missing_ok=True)
    again = team_memory(workdir)
    assert hit_titles(again, "quokka") == ["owners"]
    again.close()
    shutil.rmtree(workdir / "agents" / ".azclaw")
    assert hit_titles(team_memory(workdir), "quokka") == ["owners"]


def test_an_index_that_cannot_be_written_is_kept_in_memory(workdir):
    (workdir / "blocker").write_text("a file, not a folder")
    memory = team_memory(workdir, index_path=workdir / "blocker" / "index.sqlite3")
    memory.remember("alice", "Still searchable.", "fallback")
    assert hit_titles(memory, "searchable") == ["fallback"] and memory.index_path == ":memory:"


def test_concurrent_remembers_from_threads_lose_nothing(workdir):
    memory = team_memory(workdir)
    errors = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                agent = TEAM[(worker + i) % 3]
                memory.remember(agent, f"shared line w{worker} i{i}", "shared-log")
                memory.remember(agent, f"own note w{worker}x{i} zebra", f"w{worker}-{i}")
                if i % 5 == 0:
                    memory.recall("zebra")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    lines = [ln for agent in TEAM for m in memory.memories(agent) if m.title == "shared-log"
             for ln in m.text().splitlines()]
    assert sorted(lines) == sorted(f"shared line w{w} i{i}" for w in range(6) for i in range(25))
    assert sum(memory.counts().values()) == 3 + 150
    assert len(memory.search("zebra", limit=50)) == 50


CHILD = """
import sys, time
from pathlib import Path
from azclaw import TeamMemory
base, tag = Path(sys.argv[1]), sys.argv[2]
memory = TeamMemory({n: base / "agents" / n for n in ("alice", "bob", "carol")})
(base / f"ready-{tag}").touch()
while not (base / "go").exists():
    time.sleep(0.001)
for i in range(60):
    memory.remember("alice", f"{tag} appended {i}", "both-processes")
    memory.remember(("bob", "carol")[i % 2], f"{tag} note {i} koala", f"{tag}-{i}")
    if i % 10 == 0:
        memory.recall("koala")
"""


def test_concurrent_remembers_from_two_processes_lose_nothing(workdir):
    memory = team_memory(workdir)
    memory.recall("")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(workdir), tag], stderr=subprocess.PIPE, text=True)
             for tag in ("p1", "p2")]
    # both start together once both are ready, so that their writes interleave
    wait_for(lambda: all((workdir / f"ready-{tag}").exists() or p.poll() is not None
                         for tag, p in zip(("p1", "p2"), procs)), what="both writers ready")
    (workdir / "go").touch()
    for proc in procs:
        assert proc.wait(timeout=CLI_TIMEOUT) == 0, proc.stderr.read()
    [shared] = [m for m in memory.memories("alice") if m.title == "both-processes"]
    assert sorted(shared.text().splitlines()) == sorted(f"{t} appended {i}" for t in ("p1", "p2") for i in range(60))
    assert memory.counts() == {"alice": 1, "bob": 60, "carol": 60}
    assert hit_titles(memory, "p1 note 59 koala")[0] == "p1-59"
    [(found, text)] = memory.search("both processes appended")
    assert found.title == "both-processes" and "p1 appended 59" in text and "p2 appended 59" in text
    fresh = team_memory(workdir)
    assert fresh.counts() == memory.counts()
    with sqlite3.connect(fresh.index_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.execute("INSERT INTO fts(fts) VALUES ('integrity-check')")


def test_titles_are_sanitised_like_agentazall(workdir):
    from agentazall.helpers import sanitize
    assert sanitize_title("API design/v2") == sanitize("API design/v2") == "API_design_v2"
    memory = team_memory(workdir, "alice")
    stored = memory.remember("alice", "x", "../../etc/passwd")
    assert stored.path.parent == memory.roots["alice"].mailbox / date.today().isoformat() / "remember"


@pytest.mark.parametrize("title", ["v2.", "...", " padded ", ".hidden", "x" * 130, "é" * 120, "a\tb\nc"])
def test_titles_give_the_file_name_agentazall_gives(title):
    from agentazall.helpers import sanitize
    assert sanitize_title(title) == sanitize(title)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_any_title_gives_one_safe_file_name(title):
    name = sanitize_title(title)
    assert name and "/" not in name and "\0" not in name and len((name + ".txt").encode()) <= 255
    assert sanitize_title(name) == name or not title


def test_a_python_whose_sqlite_lacks_fts5_gets_one_clear_error(workdir, monkeypatch):
    from azclaw.errors import MemoryIndexError
    from azclaw.memory import store as memory_store
    monkeypatch.setattr(memory_store, "FTS", "fts_not_built")  # what such a build answers
    with pytest.raises(MemoryIndexError) as caught:
        team_memory(workdir)
    message = str(caught.value)
    assert "\n" not in message and "FTS_NOT_BUILT" in message and "no such module" in message


def test_dropped_memories_release_their_index_files_without_the_garbage_collector(workdir):
    import gc

    def open_index_files() -> int:
        # this test's only: an earlier test's memory may still wait for the collector
        return sum(1 for fd in os.listdir("/proc/self/fd")
                   if "-index.sqlite3" in (path := os.path.realpath(f"/proc/self/fd/{fd}"))
                   and path.startswith(str(workdir.resolve())))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    gc.disable()
    try:
        for i in range(40):
            memory = team_memory(workdir)
            memory.remember("alice", f"note {i}", "notes")
            memory.recall("note")
        del memory
        assert open_index_files() <= 6  # the last one's two databases (memories, messages), -wal and -shm at most
    finally:
        gc.enable()


words = st.sampled_from("alpha beta gamma delta omega kappa sigma theta".split())
memories = st.lists(st.tuples(st.sampled_from(TEAM), st.lists(words, min_size=1, max_size=6),
                              st.integers(0, 20)), min_size=1, max_size=12)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(memories, st.lists(words, min_size=1, max_size=3))
def test_every_hit_contains_a_query_word_and_every_match_is_found(workdir, stored, query):
    shutil.rmtree(workdir / "agents", ignore_errors=True)
    memory = team_memory(workdir, watch=False)
    texts = {}
    for n, (agent, body, days_ago) in enumerate(stored):
        plant(memory, agent, f"m{n}", " ".join(body), days_ago=days_ago)
        texts[f"m{n}"] = set(body)
    hits = hit_titles(memory, " ".join(query), limit=50)
    expected = {t for t, body in texts.items() if body & set(query)}
    assert set(hits) == expected
    memory.close()


# -- Issue 20: memory that returns the current truth, and rounds that are searchable ------------
# Entries say who stored them, in which round and when; of two memories on one subject the newer
# ranks first and the older is marked; every round's messages are archived and found after the
# memories. The format on disk is in azclaw/memory/layout.py.

from datetime import datetime  # noqa: E402

from azclaw.memory import MessageHit, query_terms  # noqa: E402
from azclaw.memory.subjects import identifiers, same_subject, subject, words  # noqa: E402

HOURS_AGO = datetime.now().replace(microsecond=0) - timedelta(hours=5)


def blocks(shown: str) -> list[tuple[str, str]]:
    """A recall result as (header, body) per hit, in order."""
    found = []
    for block in shown.split("\n## ")[1:]:
        header, _, body = ("## " + block).partition("\n")
        found.append((header, body.strip()))
    return found


def test_recall_of_a_changed_fact_shows_the_newer_memory_first_with_who_and_when_and_marks_the_older(workdir):
    memory = team_memory(workdir, "architect", "developer", "reviewer")
    memory.remember("architect", "The API server listens on port 8443.", "server-port", round=3, at=HOURS_AGO)
    memory.remember("reviewer", "Metrics are served on port 9100.", "metrics-port", round=4,
                    at=HOURS_AGO + timedelta(minutes=10))
    memory.remember("developer", "Changed the server port to 7070 because 8443 clashes with the admin console.",
                    round=12, at=HOURS_AGO + timedelta(hours=2))
    memory.remember("architect", "database: SQLite", "db", round=2, at=HOURS_AGO)
    memory.remember("reviewer", "Database: PostgreSQL", round=9, at=HOURS_AGO + timedelta(hours=1))

    hits = blocks(memory.recall("what port does the server use"))
    stamp = (HOURS_AGO + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    assert re.fullmatch(rf"## [0-9]{{6}} \(by developer, round 12, {stamp}\)", hits[0][0])
    assert hits[0][1].startswith("Changed the server port to 7070")
    [older] = [h for h in hits if "8443." in h[1]]
    assert re.fullmatch(r"## server-port \(by architect, round 3, [-0-9: ]+\) older: superseded by '[0-9]{6}' "
                        r"\(round 12\)", older[0])
    assert hits.index(older) > 0, "the older one is shown, after the newer"
    assert not any("older" in header for header, body in hits if "9100" in body), "another port, not older"

    db = blocks(memory.recall("database choice"))
    assert db[0][0].startswith("## ") and "(by reviewer, round 9," in db[0][0] and db[0][1] == "Database: PostgreSQL"
    assert "older: superseded by" in db[1][0] and db[1][1] == "database: SQLite"


def test_a_decision_said_only_in_a_message_is_found_by_recall_rounds_later_marked_as_from_a_message(fake_llm, workdir):
    def responder(request):
        if request.agent == "architect" and request.round == 3:
            return text("Design settled: we use port 7070 for the API server.")
        if request.agent == "developer" and request.round == 9 and not request.tool_results:
            return call("recall", {"query": "which port for the api server"})
        return text(f"{request.agent}: nothing new in round {request.round}.")

    fake = fake_llm(responder=responder)
    orchestrator(team(fake.url, "architect", "developer", tool_mode="native")).run(max_rounds=9)

    first, after = turn_requests(fake, "developer", 9)[:2]
    assert "7070" not in first.raw, "nothing goes into a request that the agent did not recall"
    [result] = after.tool_results
    assert "## [from round 3's messages, architect, " in result
    assert "we use port 7070 for the API server" in result
    note = workdir / "agents" / "architect" / "data" / "mailboxes" / "architect" / date.today().isoformat() / \
        "notes" / "round-0003.txt"
    assert re.fullmatch(rf"\[message of architect in round 3, {STAMP}\]\nDesign settled: we use port 7070 for "
                        r"the API server\.\n", note.read_text(encoding="utf-8"))
    notes = sorted(p.name for p in (workdir / "agents").rglob("notes/*.txt"))
    assert notes == sorted(f"round-{n:04d}.txt" for n in range(1, 10) for _ in range(2))


def test_memories_rank_before_messages_and_a_round_archived_again_is_kept_once(workdir):
    memory = team_memory(workdir)
    memory.archive_round(4, [("alice", "Let us cache tokens in Redis, say the wombat notes."), ("bob", "")])
    memory.remember("carol", "Tokens are cached in Redis for five minutes (wombat).", "token-cache", round=5)
    assert memory.archive_round(4, [("alice", "Let us cache tokens in Redis, say the wombat notes.")]) == 0
    shown = memory.recall("wombat redis")
    assert shown.startswith("1 memory and 1 message of past rounds for 'wombat redis'")
    memory_block, message_block = blocks(shown)
    assert memory_block[0].startswith("## token-cache (by carol, round 5, ")
    assert message_block[0].startswith("## [from round 4's messages, alice, ")
    assert message_block[1] == "Let us cache tokens in Redis, say the wombat notes."

    assert memory.archive_round(4, [("alice", "Redone round: the numbat service owns billing.")]) == 1
    notes = list((workdir / "agents").rglob("notes/*"))
    assert [p.name for p in notes] == ["round-0004.txt"], "replaced, no second copy and no temp file left"
    assert "messages of past rounds" not in memory.recall("wombat")
    assert [(h.agent, h.round) for h in memory.message_hits("numbat billing")] == [("alice", 4)]
    assert all(isinstance(h, MessageHit) for h in memory.message_hits("numbat"))


def test_a_round_that_cannot_be_archived_is_a_warning_and_the_run_goes_on(fake_llm, workdir):
    fake = fake_llm(per_agent={"alice": [text("Round one."), text("Round two.")]})
    orch = orchestrator(team(fake.url, "alice"))
    day = orch.memory.roots["alice"].mailbox / date.today().isoformat()
    day.mkdir(parents=True)
    (day / "notes").write_text("a file where the notes folder should be")
    stats = orch.run(max_rounds=2)
    assert stats.rounds == 2
    log = next((workdir / "logs").glob("*.log")).read_text()
    assert "round 1's messages were not all archived" in log and "notes" in log


def test_the_agentazall_cli_reads_what_azclaw_stores_and_keeps_messages_apart_from_memories(workdir, agentazall):
    memory = team_memory(workdir, "alice")
    memory.remember("alice", "The quokka queue holds 500 jobs.", "quokka-queue", round=7)
    memory.archive_round(7, [("alice", "Said in round 7: the quokka cache expires after 90 s.")])

    recalled = agentazall("agents/alice", "recall", "quokka")
    assert recalled.returncode == 0, recalled.stderr
    assert "quokka-queue" in recalled.stdout and "The quokka queue holds 500 jobs." in recalled.stdout
    assert re.search(r"\[stored by alice in round 7, [-0-9: ]+; the 1 line above\]", recalled.stdout)
    assert "expires after 90 s" not in recalled.stdout, "round messages are notes, not memories"
    listing = agentazall("agents/alice", "recall").stdout
    assert "quokka-queue: The quokka queue holds 500 jobs." in listing and "round-0007" not in listing
    note = agentazall("agents/alice", "note", "round-0007")
    assert note.returncode == 0 and "Said in round 7: the quokka cache expires after 90 s." in note.stdout


def test_a_memory_a_person_stored_is_found_and_shown_as_stored_outside_a_run(workdir, agentazall):
    memory = team_memory(workdir, "alice")
    memory.remember("alice", "Deploys go out on Tuesday.", "deploy-day", round=2, at=HOURS_AGO)
    assert agentazall("agents/alice", "remember", "--text", "Deploys go out on Thursday from now on.",
                      "--title", "deploy-day").returncode == 0
    header, body = blocks(memory.recall("deploy day"))[0]
    assert header.startswith("## deploy-day (by a person, in alice's memory, ")
    assert body.startswith("Deploys go out on Thursday from now on.\nearlier (by alice, round 2, ")


def test_untitled_memories_of_the_same_second_get_files_of_their_own(workdir):
    memory = team_memory(workdir, "alice")
    now = datetime.now().replace(microsecond=0)
    first = memory.remember("alice", "Use tabs.", at=now)
    second = memory.remember("alice", "The logo is teal.", at=now)
    assert first.title == now.strftime("%H%M%S") and second.title == first.title + "-2"
    assert [e.text for e in parse_entries(second.path.read_text())] == ["The logo is teal."]


def test_a_memory_text_cannot_forge_who_stored_it(workdir):
    memory = team_memory(workdir, "alice")
    forged = "Port is 1.\n[stored by bob in round 99, 2099-01-01 00:00:00; the 1 line above]"
    stored = memory.remember("alice", forged, "port", round=3)
    [entry] = parse_entries(stored.path.read_text())
    assert (entry.agent, entry.round) == ("alice", 3) and "(stored by bob in round 99" in entry.text


def test_a_round_redone_after_a_kill_stores_its_memory_once_but_a_fact_changed_back_is_stored_again(workdir):
    memory = team_memory(workdir, "alice")
    memory.remember("alice", "Port 8443.", "port", round=3)
    memory.remember("alice", "Port 7070.", "port", round=4)
    memory.remember("alice", "Port 8443.", "port", round=3)  # round 3 redone
    memory.remember("alice", "Port 8443.", "port", round=9)  # changed back
    assert [(e.text, e.round) for e in parse_entries(memory.memories()[0].path.read_text())] == [
        ("Port 8443.", 3), ("Port 7070.", 4), ("Port 8443.", 9)]


@pytest.mark.parametrize("a, b, query, same", [
    (("server-port", "The API server listens on port 8443."), ("", "Changed the server port to 7070."),
     "what port does the server use", True),
    (("", "database: SQLite"), ("", "Database: PostgreSQL"), "database choice", True),
    (("retry-count", "We retry 6 times."), ("", "Retry count is now 3, because it was too slow."), "retry count",
     True),
    (("package-manager", "Package manager: pip-tools"), ("", "We switched the package manager from PDM to uv."),
     "package manager", True),
    (("metrics-port", "Metrics are served on port 9100."), ("server-port", "The server listens on port 8443."),
     "metrics port", False),
    (("metrics-port", "The metrics server exposes port 9100."), ("server-port", "The server listens on 8443."),
     "what port does the server use", False),
    (("p1-59", "p1 note 59 koala"), ("p2-59", "p2 note 59 koala"), "p1 note 59 koala", False),
    (("", "Summary: the auth module is done."), ("", "Summary: the billing tests pass."), "summary", False),
    (("review-journal", "Reviewed the journal code: the upload handler needs a test."),
     ("review-test", "Reviewed the test code: the runner handler needs a test."), "test runner", False),
    (("", "We switched the port of the API server from 24939 to 8443."), ("", "API port: 7070 (changed from 8443)."),
     "api server port", True),
    (("", "Cache backend: Redis"), ("", "We now cache in Valkey instead of Redis."), "cache backend", True),
    (("", "Test database: an in-memory SQLite"), ("", "Database engine: MariaDB (changed from SQLite)."),
     "which database do the tests use", False),
    (("http-request-timeout", "The HTTP request timeout is 30 seconds."),
     ("", "Bug: the env timeout leaks a https when the request is cancelled."), "http request timeout", False),
    (("", "Use 10 March as the date of the release."), ("", "Moved the tag from release to main."), "release date",
     False),
])
def test_memories_on_one_subject_are_told_apart_from_look_alikes(a, b, query, same):
    assert same_subject(subject(*a), subject(*b), words(query), identifiers(query)) is same


def test_a_memory_holding_the_query_words_as_a_phrase_ranks_before_one_that_holds_them_apart(workdir):
    memory = team_memory(workdir, "alice", "bob")
    memory.remember("alice", "Lists show 50 items per page.", round=6, at=HOURS_AGO + timedelta(minutes=9))
    memory.remember("bob", "Benchmark: the page handles 1200 items per second.", "benchmark-page", round=3,
                    at=HOURS_AGO)
    hits = memory.hits("how many items per page")
    assert [h.latest.text for h in hits] == ["Lists show 50 items per page.",
                                             "Benchmark: the page handles 1200 items per second."]


def test_a_how_question_searches_for_what_it_asks_about_not_for_its_measure():
    assert query_terms("how many items per page") == ["items", "page"]
    assert query_terms("how long may a background job run") == ["background", "job", "run"]
    assert query_terms("long polling interval") == ["long", "polling", "interval"]


def test_a_memory_that_says_what_the_value_was_supersedes_the_memory_that_states_it(workdir):
    memory = team_memory(workdir, "alice", "bob")
    memory.remember("alice", "We switched the port of the API server from 24939 to 8443.", round=3, at=HOURS_AGO)
    memory.remember("bob", "API port: 7070 (changed from 8443).", round=9, at=HOURS_AGO + timedelta(hours=1))
    memory.remember("bob", "Metrics port: 9100", "metrics-port", round=4, at=HOURS_AGO + timedelta(hours=2))
    hits = memory.hits("api server port")
    assert hits[0].latest.text == "API port: 7070 (changed from 8443)." and hits[0].newer is None
    [older] = [h for h in hits if "24939" in h.latest.text]
    assert older.newer is hits[0]
    assert all(h.newer is None for h in hits if "9100" in h.latest.text), "another port, not older"


def test_a_newer_note_that_only_scatters_a_facts_words_does_not_supersede_it(workdir):
    memory = team_memory(workdir, "alice", "bob")
    memory.remember("bob", "The HTTP request timeout is 30 seconds.", "http-request-timeout", round=5, at=HOURS_AGO)
    memory.remember("alice", "Bug: the env timeout leaks a https when the request is cancelled.", round=12,
                    at=HOURS_AGO + timedelta(hours=3))
    hits = memory.hits("http request timeout")
    assert hits[0].latest.text == "The HTTP request timeout is 30 seconds." and hits[0].newer is None
    assert hits[1].newer is None


def test_changed_facts_rank_the_current_value_first_in_a_small_fact_consolidation_benchmark():
    from bench_recall import run
    rows = [row for seed in (1, 2) for row in run(seed, rounds=60, others=300)["outcomes"]]
    stale = sum(r["outcome"] == "stale" for r in rows) / len(rows)
    found = [r for r in rows if r["outcome"] != "other"]
    current = sum(r["outcome"] == "current" for r in found) / len(found)
    assert stale <= 0.05 and current >= 0.95, (stale, current, len(rows))
    assert sum(r["wrongly_older"] for r in rows) <= len(rows) * 0.01


def test_a_memory_file_or_agent_config_that_is_a_pipe_or_a_device_blocks_nothing(workdir):
    from azclaw import ConfigError
    from azclaw.memory import MemoryRoot
    mem = TeamMemory({"alice": workdir / "agents" / "alice"})
    mem.remember("alice", "The database is SQLite.", "db", round=1)
    folder = memory_file("agents/alice", "alice", "db").parent
    os.mkfifo(folder / "pipe.txt")  # opening it to read would wait for a writer forever
    (folder / "zero.txt").symlink_to("/dev/zero")  # reading it would never end
    assert "SQLite" in mem.recall("database")  # the index passes them over
    mem.close()
    config = workdir / "bob" / "config.json"
    config.parent.mkdir()
    os.mkfifo(config)
    with pytest.raises(ConfigError, match="config.json"):
        MemoryRoot.prepare("bob", config.parent)
