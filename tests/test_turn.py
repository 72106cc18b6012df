"""One agent's turn (azclaw/turn.py): a reply's tool calls are capped."""

from __future__ import annotations

from azclaw.turn import MAX_CALLS_PER_STEP
from fakellm import Reply, text
from helpers import journal, run_file


def test_a_reply_with_a_thousand_tool_calls_runs_only_the_cap_and_the_rest_are_told_why(fake_llm, azclaw,
                                                                                        workdir):
    flood = [("remember", {"text": f"note {n}", "title": f"note-{n}"}) for n in range(1000)]
    fake = fake_llm(per_agent={"solo": [Reply(tool_calls=flood), text("Done.")]})
    proc = azclaw("run", "--task", "Flood", "--endpoint", fake.url, "--agents", "solo", "--max-rounds", "1",
                  "--retries", "0")
    assert proc.returncode == 0, proc.stderr
    stored = list((workdir / "agents" / "solo").rglob("note-*.txt"))
    assert len(stored) == MAX_CALLS_PER_STEP == 16
    results = fake.chats_of("solo")[1].tool_results
    assert len(results) == 1000, "every call gets a result, as the API wants"
    assert all(r.startswith("Stored") or "note" in r for r in results[:MAX_CALLS_PER_STEP]), results[:3]
    refused = results[MAX_CALLS_PER_STEP:]
    assert all(r.startswith("ERROR: not run: one reply may make at most 16 tool calls") for r in refused)
    [turn] = [e for e in journal(run_file(workdir / "logs", "_journal.jsonl")) if e["event"] == "turn"]
    ran, over = turn["calls"][:-1], turn["calls"][-1]
    assert len(ran) == turn["tool_calls"] == MAX_CALLS_PER_STEP and turn["text"] == "Done."
    assert (over["tool"], over["ok"], over["arguments"]) == ("", False, "984 more calls")  # one entry for the rest
    assert turn["tool_errors"] == 1
    assert any("a reply made 1000 tool calls: the first 16 were taken, the other 984 refused" in p
               for p in turn["problems"])
    assert "the other 984 refused" in proc.stderr  # said on the console too
