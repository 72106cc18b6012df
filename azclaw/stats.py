"""Run statistics: what the team did, in numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class AgentStats:
    """One agent's totals over a run (resumed runs carry them on)."""

    turns: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # time spent waiting for the model
    tool_calls: int = 0
    tool_errors: int = 0  # calls that returned an error to the model
    memories_stored: int = 0
    files_written: int = 0  # distinct files
    errors: int = 0
    empty_replies: int = 0
    truncated_replies: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


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

    def to_dict(self) -> dict:
        data = asdict(self)
        for name, agent in self.agents.items():
            data["agents"][name]["tokens_per_second"] = round(agent.tokens_per_second, 2)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunStats":
        """Rebuild from ``to_dict``; a field of the wrong type raises
        TypeError or ValueError here, not in the middle of a run."""
        agents = {str(name): AgentStats(**_numbers(AgentStats, raw))
                  for name, raw in (data.get("agents") or {}).items()}
        return cls(**_numbers(cls, data), agents=agents)


def _numbers(kind, data: dict) -> dict:
    """The known numeric fields of ``data``, as the types ``kind`` declares."""
    out = {}
    for f in fields(kind):
        if f.name in data and f.name != "agents":
            value = data[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"stats field {f.name!r}: expected a number, got {value!r}")
            out[f.name] = float(value) if isinstance(f.default, float) else int(value)
    return out
