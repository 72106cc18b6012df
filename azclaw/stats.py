"""Run statistics: what the team did, in numbers.

Turns are added with one function, ``RunStats.add``, wherever they come
from (a live round, a probe, a journal read back), so the console summary,
``azclaw status`` and ``azclaw report`` always agree. The names are the
``Turn``'s: ``tool_calls`` counts calls that ran, ``tools`` counts them by
name, ``memories`` counts what was stored, ``files`` lists the distinct
paths written, ``errors``, ``empty`` and ``truncated`` count what went
wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from .numbers import number, whole

if TYPE_CHECKING:
    from .turn import Turn

# the names of checkpoints and status files before version 0.4
_OLD_NAMES = {"memories_stored": "memories", "tool_calls_by_name": "tools", "empty_replies": "empty",
              "truncated_replies": "truncated"}


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
    tools: dict[str, int] = field(default_factory=dict)  # calls by tool name
    memories: int = 0
    files: list[str] = field(default_factory=list)  # distinct paths it wrote, in order
    memory_titles: list[str] = field(default_factory=list)  # distinct titles it stored under, in order
    errors: int = 0
    empty: int = 0  # turns that ended with an empty reply
    truncated: int = 0  # replies cut off

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

    def add(self, turn: "Turn") -> None:
        self.turns += not (turn.probe or turn.retried)
        self.requests += turn.requests
        self.prompt_tokens += turn.prompt_tokens
        self.completion_tokens += turn.completion_tokens
        self.cached_tokens += turn.cached_tokens
        self.seconds += turn.seconds  # with its tokens, so tok/s stays a true rate
        self.tool_calls += turn.tool_calls
        self.tool_errors += turn.tool_errors
        for name, n in turn.tools.items():
            self.tools[name] = self.tools.get(name, 0) + n
        self.memories += len(turn.memories)
        self.files.extend(f for f in dict.fromkeys(turn.files) if f not in self.files)
        self.memory_titles.extend(t for t in dict.fromkeys(turn.memories) if t not in self.memory_titles)
        self.errors += len(turn.errors)
        self.empty += turn.empty
        self.truncated += turn.truncated

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["tools"], data["files"] = dict(self.tools), list(self.files)
        data["memory_titles"] = list(self.memory_titles)
        data["seconds"] = round(self.seconds, 3)
        data["tokens"] = self.tokens
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        data["cached_share"] = round(self.cached_share, 3)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AgentStats":
        """Rebuild from ``to_dict`` (or a checkpoint of an earlier version);
        a field of the wrong type raises TypeError here, not in a run."""
        data = {_OLD_NAMES.get(k, k): v for k, v in data.items()}
        stats = cls(**_numbers(cls, data))
        stats.tools = {str(k): whole(v) for k, v in _mapping(data, "tools").items()}
        files = data.get("files") or []
        if not isinstance(files, list):
            raise TypeError(f"stats field 'files': expected a list, got {files!r}")
        stats.files = [str(f) for f in files]
        titles = data.get("memory_titles") or []
        stats.memory_titles = [str(t) for t in titles] if isinstance(titles, list) else []
        return stats


@dataclass
class RunStats:
    """The run's totals: ``agents`` holds each agent's AgentStats, and the
    team's figures are their sums."""

    rounds: int = 0
    elapsed: float = 0.0  # seconds, summed over resumed sessions
    agents: dict[str, AgentStats] = field(default_factory=dict)

    def agent(self, name: str) -> AgentStats:
        return self.agents.setdefault(name, AgentStats())

    def add(self, turn: "Turn") -> None:
        """Add what a turn (or a probe answer) cost and did."""
        self.agent(turn.agent).add(turn)

    def _sum(self, name: str):
        return sum(getattr(a, name) for a in self.agents.values())

    prompt_tokens = property(lambda self: self._sum("prompt_tokens"))
    completion_tokens = property(lambda self: self._sum("completion_tokens"))
    cached_tokens = property(lambda self: self._sum("cached_tokens"))
    requests = property(lambda self: self._sum("requests"))
    seconds = property(lambda self: self._sum("seconds"))
    tool_calls = property(lambda self: self._sum("tool_calls"))
    tool_errors = property(lambda self: self._sum("tool_errors"))
    memories = property(lambda self: self._sum("memories"))
    errors = property(lambda self: self._sum("errors"))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def files(self) -> list[str]:
        """Every distinct file the team wrote, sorted."""
        return sorted({f for a in self.agents.values() for f in a.files})

    @property
    def memory_titles(self) -> list[str]:
        """Every distinct title the team stored memories under, agent by agent."""
        return list(dict.fromkeys(t for a in self.agents.values() for t in a.memory_titles))

    # the seed's names
    @property
    def files_written(self) -> int:
        return len(self.files)

    @property
    def memories_stored(self) -> int:
        return self.memories

    def to_dict(self) -> dict:
        return {"rounds": self.rounds, "elapsed": round(self.elapsed, 3), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cached_tokens": self.cached_tokens,
                "tool_calls": self.tool_calls, "tool_errors": self.tool_errors, "memories": self.memories,
                "files": self.files, "errors": self.errors,
                "agents": {name: agent.to_dict() for name, agent in self.agents.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "RunStats":
        """Rebuild from ``to_dict``; a field of the wrong type raises
        TypeError or ValueError here, not in the middle of a run."""
        agents = {str(name): AgentStats.from_dict(raw) for name, raw in _mapping(data, "agents").items()}
        for key in ("rounds", "elapsed", "prompt_tokens", "completion_tokens", "cached_tokens", "tool_calls",
                    "tool_errors", "memories", "memories_stored", "errors"):  # the totals are the agents' sums
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"stats field {key!r}: expected a number, got {value!r}")
        return cls(whole(data.get("rounds")), number(data.get("elapsed")), agents)

    def table(self, names: list[str] | None = None) -> str:
        """The per-agent table of the console summary and ``azclaw status``."""
        return agent_table({n: self.agent(n) for n in names} if names else self.agents)


def agent_table(agents: dict[str, AgentStats]) -> str:
    """Agents as rows; every column as wide as its widest cell, so none run together."""
    head = ["agent", "turns", "tokens", "cached", "tok/s", "tools", "memories", "files", "errors", "empty", "cut"]
    rows = [[name, str(a.turns), f"{a.tokens:,}", f"{a.cached_share:.0%}", f"{a.tokens_per_second:.1f}",
             str(a.tool_calls), str(a.memories), str(len(a.files)), str(a.errors), str(a.empty), str(a.truncated)]
            for name, a in agents.items()]
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
