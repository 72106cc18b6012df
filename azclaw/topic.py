"""Topics: a task in phases, read from JSON and validated once, at load.

Every problem is reported with the file and the field path, e.g.
``topics/x.json: phases[1].rounds: expected [start, end]``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .files import MB, read_json
from .scoring import score

_TOPIC_FIELDS = {"title", "system_context", "initial_prompt", "phases", "coherence_probes", "agent_roles",
                 "source_dirs", "mcp_servers", "finish"}
_FINISH_FIELDS = {"agent", "check"}
_PHASE_FIELDS = {"name", "rounds", "focus", "source_files"}
_PROBE_FIELDS = {"after_round", "question", "expect"}
TOPIC_LIMIT = 16 * MB  # bytes of a topic file


@dataclass
class Phase:
    """A stretch of rounds with one focus."""

    name: str
    start: int
    end: int
    focus: str = ""
    source_files: list[str] = field(default_factory=list)


def phase_at(phases, round_no: int) -> Phase | None:
    """The phase that holds round ``round_no`` (the one rule, for topics and journals)."""
    return next((p for p in phases if p.start <= round_no <= p.end), None)


@dataclass
class Probe:
    """A question asked of every agent after a round, to test what it knows."""

    after_round: int
    question: str
    expect: list[str] = field(default_factory=list)

    def score(self, answer: str) -> bool | None:
        """True when the answer holds every expected phrase as whole words
        and not negated (``azclaw/scoring.py``); None without any."""
        return score(answer, self.expect)


@dataclass(frozen=True)
class Finish:
    """When the work is done: ``agent`` may declare it with a ``done`` tool,
    ``check`` is a command that succeeds once it is (``finish.py``)."""

    agent: str = ""
    check: tuple[str, ...] = ()


@dataclass
class Topic:
    """A task for the team, with phases, probes and per-role prompts."""

    title: str
    system_context: str = ""
    initial_prompt: str = ""
    phases: list[Phase] = field(default_factory=list)
    coherence_probes: list[Probe] = field(default_factory=list)
    agent_roles: dict[str, str] = field(default_factory=dict)
    # the topic's MCP servers as written, {NAME: {command, args, env...} | {url...}}: checked for shape
    # here; azclaw.mcp turns them into server specs, and runs a command only when the user allows it
    mcp_servers: dict = field(default_factory=dict)
    name: str = "task"  # the slug that names checkpoints and logs
    source_dirs: list[Path] = field(default_factory=list)  # read when a run names no source folder
    source: str = ""  # the topic file it was read from ("" when built in code)
    finish: Finish | None = None  # when the work is done (a done tool, a check command)

    @classmethod
    def from_task(cls, task: str, name: str | None = None) -> "Topic":
        """A one-phase topic for a plain task, named from the task (its first
        words and a short hash of it) unless ``name`` is given, so runs of
        different tasks in one folder keep their own checkpoint and journal."""
        first = task.strip().splitlines()[0][:80] if task.strip() else "task"
        digest = hashlib.sha256(task.encode("utf-8", "replace")).hexdigest()[:6]
        return cls(title=first, initial_prompt=task, name=slug(name) if name else f"{slug(first)[:40]}_{digest}")

    @property
    def last_round(self) -> int | None:
        return max((p.end for p in self.phases), default=None)

    def phase_for(self, round_no: int) -> Phase | None:
        return phase_at(self.phases, round_no)

    def probes_after(self, round_no: int) -> list[Probe]:
        return [p for p in self.coherence_probes if p.after_round == round_no]

    def missing_sources(self, folders: list[Path]) -> list[str]:
        """The phases' ``source_files`` that none of ``folders`` holds."""
        wanted = dict.fromkeys(f for p in self.phases for f in p.source_files)
        return [f for f in wanted if not any((Path(d) / f).is_file() for d in folders)]

    @classmethod
    def from_dict(cls, data: object, source: str = "topic", name: str = "topic") -> "Topic":
        topic = _parse(data, source, name)
        topic.source = source
        return topic

    @classmethod
    def load(cls, path: str | Path) -> "Topic":
        """Read and validate a topic file."""
        path = Path(path)
        data = read_json(path, "topic file", ConfigError, limit=TOPIC_LIMIT)
        topic = _parse(data, str(path), slug(path.stem))
        topic.source_dirs = [path.parent / d for d in topic.source_dirs]
        topic.source = str(path)
        return topic


def slug(text: str) -> str:
    """A file-name-safe name: ``my-topic`` -> ``my_topic``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "topic"


def find_topic(name: str, search_dirs: list[Path]) -> Path:
    """A path as given, else ``<dir>/NAME.json`` in the first dir that has it."""
    direct = Path(name)
    if direct.exists() and not direct.is_dir():
        return direct  # a named pipe or a device too: loading it says what it is, without reading it
    if direct.is_dir():
        raise ConfigError(f"topic {name!r} is a folder; give a topic file or a NAME from topics/")
    file_name = name if name.endswith(".json") else f"{name}.json"
    for folder in search_dirs:
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d / file_name) for d in search_dirs)
    raise ConfigError(f"topic {name!r} not found (looked for {name}, {looked})")


# -- validation -------------------------------------------------------------

def _expect(value, kind, where: str, what: str):
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where}: expected {what}, got {json.dumps(value)[:60]}")
    return value


def _no_unknown(data: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown field; valid fields: {', '.join(sorted(allowed))}")


def _string_list(value, where: str) -> list[str]:
    items = _expect(value, list, where, "a list of strings")
    for i, item in enumerate(items):
        _expect(item, str, f"{where}[{i}]", "a string")
    return list(items)


def _parse(data: object, source: str, name: str) -> Topic:
    _expect(data, dict, source, "a JSON object")
    _no_unknown(data, _TOPIC_FIELDS, f"{source}: ")
    at = f"{source}: "
    if "title" not in data:
        raise ConfigError(f"{at}title: missing (every topic needs a title)")
    title = _expect(data["title"], str, f"{at}title", "a string")
    topic = Topic(title=title, name=name,
                  system_context=_expect(data.get("system_context", ""), str, f"{at}system_context", "a string"),
                  initial_prompt=_expect(data.get("initial_prompt", ""), str, f"{at}initial_prompt", "a string"))
    for i, raw in enumerate(_expect(data.get("phases", []), list, f"{at}phases", "a list")):
        where = f"{at}phases[{i}]"
        _expect(raw, dict, where, "an object")
        _no_unknown(raw, _PHASE_FIELDS, f"{where}.")
        rounds = raw.get("rounds")
        if (not isinstance(rounds, list) or len(rounds) != 2
                or not all(isinstance(r, int) and not isinstance(r, bool) for r in rounds)):
            raise ConfigError(f"{where}.rounds: expected [start, end], got {json.dumps(rounds)}")
        start, end = rounds
        if start < 1 or end < start:
            raise ConfigError(f"{where}.rounds: expected 1 <= start <= end, got [{start}, {end}]")
        phase = Phase(name=_expect(raw.get("name", f"Phase {i + 1}"), str, f"{where}.name", "a string"),
                      start=start, end=end,
                      focus=_expect(raw.get("focus", ""), str, f"{where}.focus", "a string"),
                      source_files=_string_list(raw.get("source_files", []), f"{where}.source_files"))
        for j, other in enumerate(topic.phases):
            if phase.start <= other.end and other.start <= phase.end:
                raise ConfigError(f"{where}.rounds: [{start}, {end}] overlaps phases[{j}] "
                                  f"[{other.start}, {other.end}]")
        topic.phases.append(phase)
    for i, raw in enumerate(_expect(data.get("coherence_probes", []), list, f"{at}coherence_probes", "a list")):
        where = f"{at}coherence_probes[{i}]"
        _expect(raw, dict, where, "an object")
        _no_unknown(raw, _PROBE_FIELDS, f"{where}.")
        if "after_round" not in raw or "question" not in raw:
            raise ConfigError(f"{where}: needs after_round and question")
        after = _expect(raw["after_round"], int, f"{where}.after_round", "a round number")
        if after < 1:
            raise ConfigError(f"{where}.after_round: expected a round number >= 1, got {after}")
        topic.coherence_probes.append(Probe(
            after_round=after,
            question=_expect(raw["question"], str, f"{where}.question", "a string"),
            expect=_string_list(raw.get("expect", []), f"{where}.expect")))
    topic.source_dirs = [Path(d) for d in _string_list(data.get("source_dirs", []), f"{at}source_dirs")]
    roles = _expect(data.get("agent_roles", {}), dict, f"{at}agent_roles", "an object")
    for key, value in roles.items():
        topic.agent_roles[key] = _expect(value, str, f"{at}agent_roles.{key}", "a string")
    if "finish" in data:
        topic.finish = _finish(data["finish"], f"{at}finish")
    servers = _expect(data.get("mcp_servers", {}), dict, f"{at}mcp_servers",
                      "an object of NAME: {command, args, env} or {url}")
    for key, value in servers.items():
        _expect(value, dict, f"{at}mcp_servers.{key}", "an object with command (and args, env) or url")
    topic.mcp_servers = dict(servers)
    return topic


def _finish(raw, where: str) -> Finish:
    from .limits import command  # the standard library only, like this module
    _expect(raw, dict, where, 'an object such as {"agent": "reviewer", "check": "python -m pytest -q"}')
    _no_unknown(raw, _FINISH_FIELDS, f"{where}.")
    agent = _expect(raw.get("agent", ""), str, f"{where}.agent", "an agent's name")
    check = raw.get("check")
    if check is not None and not isinstance(check, (str, list)):
        _expect(check, str, f"{where}.check", "a command line (a string or a list of strings)")
    words = command(check, f"{where}.check") if check is not None else ()
    if not agent.strip() and not words:
        raise ConfigError(f"{where}: give agent (who may declare the work done) or check (a command that "
                          "succeeds once it is done), or both")
    return Finish(agent.strip(), words)
