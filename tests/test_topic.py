"""Topics are validated at load with the file and field path in
every message; phases steer the system prompt; probes are asked."""

import json
from pathlib import Path

import pytest
from properties import given, settings, st  # hypothesis, or a skip without it

from azclaw.topic import Probe
from azclaw import Topic
from azclaw.errors import ConfigError
from fakellm import text
from helpers import orchestrator, read_json, team

GOOD_PHASE = {"name": "Design", "rounds": [1, 2]}

# (what is wrong, file content, the field path the message must name)
BAD_TOPICS = [
    ("missing title", {"initial_prompt": "x"}, "title"),
    ("title not a string", {"title": 5}, "title"),
    ("phases[1].rounds one number", {"title": "t", "phases": [GOOD_PHASE, {"name": "B", "rounds": [3]}]},
     "phases[1].rounds"),
    ("phases[1].rounds not a list", {"title": "t", "phases": [GOOD_PHASE, {"name": "B", "rounds": "3-4"}]},
     "phases[1].rounds"),
    ("phases[1].rounds backwards", {"title": "t", "phases": [GOOD_PHASE, {"name": "B", "rounds": [5, 3]}]},
     "phases[1].rounds"),
    ("phases[0].rounds missing", {"title": "t", "phases": [{"name": "A"}]}, "phases[0].rounds"),
    ("unknown top-level field", {"title": "t", "colour": "red"}, "colour"),
    ("unknown phase field", {"title": "t", "phases": [{"name": "A", "rounds": [1, 2], "focsu": "x"}]},
     "phases[0].focsu"),
    ("overlapping phases", {"title": "t", "phases": [GOOD_PHASE, {"name": "B", "rounds": [2, 4]}]},
     "phases[1].rounds"),
    ("probe without question", {"title": "t", "coherence_probes": [{"after_round": 2}]},
     "coherence_probes[0]"),
    ("probe round not a number", {"title": "t", "coherence_probes": [{"after_round": "2", "question": "q"}]},
     "coherence_probes[0].after_round"),
    ("agent role not a string", {"title": "t", "agent_roles": {"alice": ["x"]}}, "agent_roles.alice"),
    ("source_files not strings", {"title": "t", "phases": [{"name": "A", "rounds": [1, 1], "source_files": [1]}]},
     "phases[0].source_files[0]"),
    ("not an object", ["title"], ""),
    ("finish not an object", {"title": "t", "finish": "reviewer"}, "finish"),
    ("finish unknown field", {"title": "t", "finish": {"agent": "r", "when": "done"}}, "finish.when"),
    ("finish agent not a string", {"title": "t", "finish": {"agent": 5}}, "finish.agent"),
    ("finish check empty", {"title": "t", "finish": {"check": ""}}, "finish.check"),
    ("finish check unbalanced quote", {"title": "t", "finish": {"check": "pytest -k 'x"}}, "finish.check"),
    ("finish says nothing", {"title": "t", "finish": {}}, "finish"),
]


def write_topic(folder: Path, name: str, data) -> Path:
    path = folder / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("case, data, field", BAD_TOPICS, ids=[c[0] for c in BAD_TOPICS])
def test_bad_topic_is_refused_naming_file_and_field(workdir, case, data, field):
    path = write_topic(workdir, "bad", data)
    with pytest.raises(ConfigError) as info:
        Topic.load(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message


def test_bad_json_names_the_file_and_the_line(workdir):
    path = write_topic(workdir, "broken", '{\n  "title": "x",\n  "phases": [\n')
    with pytest.raises(ConfigError) as info:
        Topic.load(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_missing_topic_file_names_the_file(workdir):
    with pytest.raises(ConfigError) as info:
        Topic.load(workdir / "nowhere.json")
    assert "nowhere.json" in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["title", "phases", "rounds", "name", "question",
                                                       "after_round", "coherence_probes", "agent_roles",
                                                       "focus", "source_files", "x"]), inner, max_size=5),
                    max_leaves=12))
def test_any_json_either_loads_or_raises_config_error(data):
    try:
        topic = Topic.from_dict(data, source="fuzz.json")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.json")
    else:
        assert isinstance(topic.title, str)


def test_cli_topic_name_finds_topics_folder_in_the_working_directory(fake_llm, azclaw, workdir):
    (workdir / "topics").mkdir()
    write_topic(workdir / "topics", "my-topic", {"title": "Local topic", "initial_prompt": "LOCAL-TOPIC-PROMPT-3"})
    fake = fake_llm()
    proc = azclaw("run", "--topic", "my-topic", "--endpoint", fake.url, "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert fake.chats and all(r.user.split("\n\n")[0] == "LOCAL-TOPIC-PROMPT-3" for r in fake.chats)
    checkpoint = read_json(workdir / "logs" / "my_topic_checkpoint.json")
    assert checkpoint["topic"]["title"] == "Local topic"


PHASED = {
    "title": "Phased work",
    "system_context": "SYSTEM-CONTEXT-PH",
    "initial_prompt": "start",
    "phases": [
        {"name": "Discovery", "rounds": [1, 2], "focus": "FOCUS-DISCOVERY", "source_files": ["spec/requirements.md"]},
        {"name": "Construction", "rounds": [3, 4], "focus": "FOCUS-CONSTRUCTION", "source_files": ["src/main.py"]},
    ],
}


def test_phase_name_focus_and_files_reach_the_system_prompt_of_its_rounds(fake_llm):
    fake = fake_llm()
    topic = Topic.from_dict(PHASED, name="phased")
    orch = orchestrator(team(fake.url, "alice", "bob"), topic=topic)
    orch.run()

    assert {r.round for r in fake.chats} == {1, 2, 3, 4}, "the last phase's end is the last round"
    for request in fake.chats:
        system = request.system
        assert "SYSTEM-CONTEXT-PH" in system
        mine, other = (("Discovery", "FOCUS-DISCOVERY", "spec/requirements.md"),
                       ("Construction", "FOCUS-CONSTRUCTION", "src/main.py"))[:: 1 if request.round <= 2 else -1]
        for piece in mine:
            assert piece in system, (request.round, piece)
        for piece in other:
            assert piece not in system, (request.round, piece)
    assert orch.stats.rounds == 4


def test_rounds_past_the_last_phase_say_no_phase_is_planned(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "alice"), topic=Topic.from_dict(PHASED, name="phased")).run(max_rounds=5)
    [late] = [r for r in fake.chats if r.round == 5]
    assert "FOCUS-CONSTRUCTION" not in late.system and "FOCUS-DISCOVERY" not in late.system


def test_coherence_probe_is_asked_after_its_round_and_scored(fake_llm):
    def answer(request):
        if "PROBE-QUESTION-Q1" in request.user:
            return text("The port is 7311." if request.agent == "alice" else "No idea.")
        return text("working")

    topic = Topic.from_dict({"title": "Probed", "coherence_probes": [
        {"after_round": 2, "question": "PROBE-QUESTION-Q1 which port?", "expect": ["7311"]}]}, name="probed")
    fake = fake_llm(responder=answer)
    orch = orchestrator(team(fake.url, "alice", "bob"), topic=topic)
    orch.run(max_rounds=3)

    asked = [r for r in fake.chats if "PROBE-QUESTION-Q1" in r.user]
    assert [(r.agent, r.round) for r in asked] == [("alice", 2), ("bob", 2)]
    assert all(set(r.tool_names) <= {"recall"} for r in asked)
    answers = read_json(orch.checkpoint_path)["probe_answers"]
    assert [(a["agent"], a["correct"]) for a in answers] == [("alice", True), ("bob", False)]
    assert not any("PROBE-QUESTION-Q1" in r.user for r in fake.chats if r.round == 3)


def test_shipped_topics_load():
    shipped = sorted((Path(__file__).resolve().parent.parent / "topics").glob("*.json"))
    assert len(shipped) >= 2
    topics = [Topic.load(p) for p in shipped]
    assert any(len(t.phases) > 1 and t.coherence_probes for t in topics), "one multi-phase topic with probes"


@pytest.mark.parametrize("answer, expect, correct", [
    # whole words and phrases, in any letter case, with plain inflections
    ("We use PostgreSQL 16.", ["postgresql"], True),
    ("We use PostgreSQL 16.", ["postgres"], False),  # a substring is not the word
    ("We use PostgreSQL 16.", ["postgres|postgresql"], True),  # alternatives
    ("Records of closed accounts are rejected.", ["reject"], True),
    ("The projection is done.", ["reject"], False),
    ("Amounts are integer cents.", ["integer cents"], True),
    ("Cents, stored as integers.", ["integer cents"], False),  # a phrase keeps its order
    ("Use decimal.Decimal for money", ["decimal"], True),
    ("It returns 201 Created", ["201"], True),
    # a negation before the phrase does not count
    ("We never reject anything.", ["reject"], False),
    ("Definitely not postgres; sqlite it is.", ["postgres"], False),
    ("No sqlite, ever.", ["sqlite"], False),
    ("We don't use floats.", ["float"], False),
    ("Use Decimal instead of float.", ["float"], False),
    ("It isn't 8443 any more.", ["8443"], False),
    ("Not SQLite but PostgreSQL.", ["postgresql"], True),  # the negation belongs to another clause
    ("No, the port is 7070.", ["7070"], True),
    ("We don't use floats; amounts are integer cents.", ["cents"], True),
    ("Not 8443: it moved to 7070, not back to 8443.", ["7070"], True),
    # digits match as whole numbers
    ("A 9 and a 2.", ["92"], False),
    ("It is 92 characters wide.", ["9"], False),
    ("The year 1950.", ["9"], False),
    ("PIC S9(09)V99: 9 digits before the point, 2 after.", ["9", "2"], True),
    ("The balance is 1,250.00", ["1250.00"], True),
    ("It returns 2010", ["201"], False),
    ("Port 07070", ["7070"], True),
    # every phrase is needed; none expected is not scored
    ("Reminders after 30 days on port 7070", ["30", "7070"], True),
    ("Reminders after 30 days on port 8443", ["30", "7070"], False),
    ("anything", [], None),
])
def test_probe_answers_are_scored_by_whole_words_not_substrings_or_negations(answer, expect, correct):
    assert Probe(1, "q?", expect).score(answer) is correct


def test_a_finish_line_reads_as_an_agent_and_a_command():
    topic = Topic.from_dict({"title": "t", "finish": {"agent": "reviewer", "check": "python -m pytest -q 'a b'"}})
    assert topic.finish.agent == "reviewer" and topic.finish.check == ("python", "-m", "pytest", "-q", "a b")
    assert Topic.from_dict({"title": "t", "finish": {"check": ["make", "test"]}}).finish.check == ("make", "test")
    assert Topic.from_dict({"title": "t"}).finish is None
