"""Run statistics: what the team did, in numbers.

Turns are added with one function, ``RunStats.add``, wherever they come
from (a live round, a probe, a journal read back), so the console summary,
``azclaw status`` and ``azclaw report`` always agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .turn import Turn


@dataclass
class AgentStats:
    """One agent's totals over a run (resumed runs carry them on)."""

    turns: int = 0  # round turns; probe answers are counted in the rest
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the server served from its cache (where it says)
    seconds: float = 0.0  # time spent waiting for the model
    tool_calls: int = 0
    tool_errors: int = 0  # calls that returned an error to the model
    memories_stored: int = 0
    errors: int = 0
    empty_replies: int = 0
    truncated_replies: int = 0
    tool_calls_by_name: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # distinct paths it wrote, in order

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def cached_share(self) -> float:
        """The share of prompt tokens served from the server's cache."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def files_written(self) -> int:
        return len(self.files)

    # the names the status table and its JSON use
    memories = property(lambda self: self.memories_stored)
    tool_call_count = property(lambda self: self.tool_calls)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["files_written"] = self.files_written
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AgentStats":
        stats = cls(**_numbers(cls, data))
        stats.tool_calls_by_name = {str(k): int(v) for k, v in _mapping(data, "tool_calls_by_name").items()}
        files = data.get("files") or []
        if not isinstance(files, list):
            raise TypeError(f"stats field 'files': expected a list, got {files!r}")
        stats.files = [str(f) for f in files]
        return stats


@dataclass
class RunStats:
    """The run's totals; ``agents`` holds each agent's AgentStats."""

    rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    memories_stored: int = 0
    tool_calls: int = 0
    files_written: int = 0  # distinct files in the output folder written by the team
    errors: int = 0
    elapsed: float = 0.0  # seconds, summed over resumed sessions
    agents: dict[str, AgentStats] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def agent(self, name: str) -> AgentStats:
        return self.agents.setdefault(name, AgentStats())

    @property
    def files(self) -> list[str]:
        """Every distinct file the team wrote, sorted."""
        return sorted({f for a in self.agents.values() for f in a.files})

    def add(self, turn: "Turn") -> None:
        """Add what a turn (or a probe answer) cost and did."""
        a = self.agent(turn.agent)
        calls = sum(turn.tool_calls.values())
        a.turns += not (turn.probe or turn.retried)
        a.requests += turn.requests
        a.prompt_tokens += turn.prompt_tokens
        a.completion_tokens += turn.completion_tokens
        a.cached_tokens += turn.cached_tokens
        a.seconds += turn.seconds  # with its tokens, so tok/s stays a true rate
        a.tool_calls += calls
        for name, count in turn.tool_calls.items():
            a.tool_calls_by_name[name] = a.tool_calls_by_name.get(name, 0) + count
        a.tool_errors += turn.tool_errors
        a.memories_stored += len(turn.memories)
        a.errors += len(turn.errors)
        a.empty_replies += turn.empty
        a.truncated_replies += turn.truncated
        a.files.extend(f for f in dict.fromkeys(turn.files) if f not in a.files)
        self.prompt_tokens += turn.prompt_tokens
        self.completion_tokens += turn.completion_tokens
        self.tool_calls += calls
        self.memories_stored += len(turn.memories)
        self.errors += len(turn.errors)
        if turn.files:
            self.files_written = len(self.files)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["agents"] = {name: agent.to_dict() for name, agent in self.agents.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunStats":
        """Rebuild from ``to_dict``; a field of the wrong type raises
        TypeError or ValueError here, not in the middle of a run."""
        agents = {str(name): AgentStats.from_dict(raw) for name, raw in _mapping(data, "agents").items()}
        return cls(**_numbers(cls, data), agents=agents)

    def table(self, names: list[str] | None = None) -> str:
        """The per-agent table of the console summary and ``azclaw status``."""
        return agent_table({n: self.agent(n) for n in names} if names else self.agents)


def agent_table(agents: dict[str, AgentStats]) -> str:
    """Agents as rows; every column as wide as its widest cell, so none run together."""
    head = ["agent", "turns", "tokens", "cached", "tok/s", "tools", "memories", "files", "errors", "empty", "cut"]
    rows = [[name, str(a.turns), f"{a.tokens:,}", f"{a.cached_share:.0%}", f"{a.tokens_per_second:.1f}",
             str(a.tool_calls),
             str(a.memories_stored), str(a.files_written), str(a.errors), str(a.empty_replies),
             str(a.truncated_replies)] for name, a in agents.items()]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = []
    for row in [head, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@dataclass
class Coherence:
    """How many probe answers held what the probe expected."""

    correct: int = 0
    scored: int = 0  # answers to probes that have ``expect``
    asked: int = 0  # every answer, scored or not
    unanswered: int = 0  # the server never gave an answer: neither right nor wrong

    @classmethod
    def of(cls, answers: list[dict]) -> "Coherence":
        scored = [a for a in answers if a.get("correct") is not None]
        return cls(sum(1 for a in scored if a["correct"]), len(scored), len(answers),
                   sum(1 for a in answers if a.get("unanswered")))

    def __str__(self) -> str:
        gap = f" ({self.unanswered} unanswered)" if self.unanswered else ""
        if self.scored:
            return f"{self.correct}/{self.scored} answers correct{gap}"
        return (f"{self.asked} probe answers, none scored{gap}" if self.asked else "no probes asked")

    def to_dict(self) -> dict:
        return {"correct": self.correct, "scored": self.scored, "asked": self.asked,
                "unanswered": self.unanswered, "text": str(self)}


def _mapping(data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise TypeError(f"stats field {key!r}: expected an object, got {value!r}")
    return value


def _numbers(kind, data: dict) -> dict:
    """The known numeric fields of ``data``, as the types ``kind`` declares."""
    out = {}
    for f in fields(kind):
        if f.name in data and f.type in ("int", "float"):
            value = data[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"stats field {f.name!r}: expected a number, got {value!r}")
            out[f.name] = float(value) if f.type == "float" else int(value)
    return out
