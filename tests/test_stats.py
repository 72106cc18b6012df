"""Run and per-agent statistics, console progress, the log file."""

from azclaw.stats import RunStats
from azclaw import Topic
from fakellm import call, calls, error, text
from helpers import journal, orchestrator, read_json, run_file, team

TOKENS = (50, 5)


def scripted_run(fake_llm, **kwargs):
    fake = fake_llm(tokens=TOKENS, per_agent={
        "arch": [call("remember", {"text": "Use REST.", "title": "api-style"}), text("designed"),
                 error(400), text("arch r3")],
        "dev": [calls(("write_file", {"path": "app.py", "content": "print('hi')\n"}),
                      ("write_file", {"path": "README.md", "content": "# app\n"})),
                text("wrote two files"),
                call("write_file", {"path": "app.py", "content": "print('hi again')\n"}),
                text("rewrote app.py"),
                text("dev r3")],
    })
    orch = orchestrator(team(fake.url, "arch", "dev", writers=("dev",)),
                        topic=Topic.from_dict({"title": "Stats"}, name="stats"), **kwargs)
    stats = orch.run(max_rounds=3)
    return fake, orch, stats


def test_run_stats_count_rounds_tokens_memories_tool_calls_files_and_errors(fake_llm):
    fake, orch, stats = scripted_run(fake_llm)
    assert isinstance(stats, RunStats) and stats is orch.stats
    ok_requests = len(fake.chats) - 1  # the HTTP 400 reported no usage
    assert stats.rounds == 3
    assert stats.prompt_tokens == TOKENS[0] * ok_requests
    assert stats.completion_tokens == TOKENS[1] * ok_requests
    assert stats.memories_stored == 1
    assert stats.tool_calls == 4
    assert stats.files_written == 2, "distinct files: app.py written twice counts once"
    assert stats.errors == 1


def test_per_agent_stats_hold_tokens_speed_tool_calls_and_files(fake_llm):
    fake, orch, stats = scripted_run(fake_llm)
    arch, dev = stats.agents["arch"], stats.agents["dev"]
    assert arch.prompt_tokens + arch.completion_tokens == sum(TOKENS) * (len(fake.chats_of("arch")) - 1)
    assert dev.prompt_tokens + dev.completion_tokens == sum(TOKENS) * len(fake.chats_of("dev"))
    assert (arch.tool_calls, dev.tool_calls) == (1, 3)
    assert (len(arch.files), len(dev.files)) == (0, 2)
    assert (arch.memories, dev.memories) == (1, 0)
    assert (arch.errors, dev.errors) == (1, 0)
    assert arch.tokens_per_second > 0 and dev.tokens_per_second > 0
    saved = read_json(orch.checkpoint_path)["stats"]
    assert len(saved["agents"]["dev"]["files"]) == 2
    assert saved["agents"]["dev"]["tokens_per_second"] > 0


def test_a_failed_turn_does_not_stop_the_round(fake_llm):
    fake, orch, stats = scripted_run(fake_llm)
    round3 = [r for r in fake.chats if r.round == 3]
    assert [r.agent for r in round3] == ["arch", "dev"]
    assert "[dev]\nrewrote app.py" in round3[0].user
    assert "[arch]" not in round3[0].user, "the failed turn left no message"


def test_console_shows_progress_and_a_per_agent_summary(fake_llm, capsys):
    scripted_run(fake_llm, verbose=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    for round_no in (1, 2, 3):
        for agent in ("arch", "dev"):
            assert any(f"round {round_no}" in ln and agent in ln for ln in lines), (round_no, agent)
    tail = "\n".join(lines[-8:])  # the summary ends with what was produced and what to look at
    assert "arch" in tail and "dev" in tail, "a per-agent summary at the end"


def test_quiet_run_prints_nothing_but_still_logs_to_the_file(fake_llm, capsys, workdir):
    scripted_run(fake_llm, verbose=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    log = (workdir / "logs" / "stats.log").read_text()
    for round_no in (1, 2, 3):
        assert f"round {round_no}" in log
    assert "arch" in log and "dev" in log


def test_log_file_is_in_log_dir_named_after_the_topic(fake_llm, workdir):
    scripted_run(fake_llm, log_dir="run-logs")
    assert (workdir / "run-logs" / "stats.log").is_file()
    assert (workdir / "run-logs" / "stats_checkpoint.json").is_file()
    assert not (workdir / "logs").exists()


def test_probe_answers_count_their_requests_tokens_and_tool_calls(fake_llm):
    fake = fake_llm(tokens=TOKENS, per_agent={
        "arch": [text("round one"), call("recall", {"query": "database"}), text("We use SQLite.")]})
    topic = Topic.from_dict({"title": "Probed", "coherence_probes": [
        {"after_round": 1, "question": "Which database?", "expect": ["sqlite"]}]}, name="probed")
    orch = orchestrator(team(fake.url, "arch"), topic=topic)
    stats = orch.run(max_rounds=1)
    arch = stats.agents["arch"]
    assert len(fake.chats) == 3
    assert (arch.turns, arch.requests, arch.tool_calls) == (1, 3, 1)
    assert (stats.prompt_tokens, stats.completion_tokens) == (3 * TOKENS[0], 3 * TOKENS[1])
    assert orch.probe_answers[0]["correct"] is True


def test_a_rewrite_with_the_same_bytes_and_a_repeated_memory_count_as_calls_not_as_work(fake_llm, workdir):
    same = {"path": "app.py", "content": "print('hi')\n"}
    note = {"text": "Use REST.", "title": "api-style"}
    fake = fake_llm(per_agent={"dev": [calls(("write_file", same), ("remember", note)), text("r1"),
                                       calls(("write_file", same), ("remember", note)), text("r2")]})
    orch = orchestrator(team(fake.url, "dev", writers=("dev",)))
    stats = orch.run(max_rounds=2)
    assert stats.tool_calls == 4 and stats.tool_errors == 0
    assert stats.files_written == 1 and stats.memories_stored == 1
    turns = [e for e in journal(run_file(workdir / "logs", "_journal.jsonl")) if e["event"] == "turn"]
    assert [(t["files"], t["memories"], t["tool_calls"]) for t in turns] == [(["app.py"], ["api-style"], 2),
                                                                            ([], [], 2)]
