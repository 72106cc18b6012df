"""Budgets: tokens (the run's and each agent's), time (``max_time``, a
clock time ``until``) and money (tokens at ``price``), kept by an observer
of the run's turns.

Each is checked after every turn and probe answer, and when a run (or a
resumed session of it) starts: a budget used up ends the run after the
turn that used it up, so a run goes at most one turn over (one round with
``parallel``). The ending's reason is ``budget``; its ``figures`` name the
budget (``tokens``, ``agent_tokens``, ``time``, ``until``, ``money``), the
option that set it, the limit and what was used. Tokens are the servers'
counts (prompt + completion, retried attempts and probe answers included),
summed over all sessions of the run: a resumed run counts what was already
spent (``RunStarted.stats``), so it goes on only with a larger budget. So
does ``max_time``; ``until`` is a time of day for this session.
"""

from __future__ import annotations

import time
from datetime import datetime

from .events import Event, ProbeAnswered, RoundFinished, RunStarted, Stop, TurnFinished
from .limits import next_time, short


def cost(prompt_tokens: int, completion_tokens: int, price: tuple[float, float] | None) -> float:
    """US dollars for the tokens at ``price`` (per million prompt, completion tokens)."""
    if not price:
        return 0.0
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


class Budgets:
    """Ends the run when a budget of ``options`` (or an agent's own
    ``budget_tokens``) is used up."""

    def __init__(self, options, agents=(), clock=time.monotonic, now=datetime.now):
        self.tokens = options.budget_tokens
        self.max_time = options.max_time
        self.until = options.until
        self.price = options.price
        self.money = options.budget_money
        self.agents = {a.name: a.budget_tokens for a in agents if getattr(a, "budget_tokens", None)}
        self.active = bool(self.tokens or self.max_time or self.until or self.money or self.agents)
        self.clock, self.now = clock, now
        self.used: dict[str, list[int]] = {}  # agent -> [prompt, completion]
        self.before = 0.0  # seconds of the run's earlier sessions
        self.started = clock()
        self.deadline: datetime | None = None

    def __call__(self, event: Event):
        if not self.active:
            return None
        if isinstance(event, RunStarted):
            self.used = {name: [a.prompt_tokens, a.completion_tokens] for name, a in event.stats.agents.items()}
            self.before, self.started = event.stats.elapsed, self.clock()
            self.deadline = next_time(self.until, self.now()) if self.until else None
            return self.check()
        if isinstance(event, (TurnFinished, ProbeAnswered)):
            turn = event.turn
            used = self.used.setdefault(turn.agent, [0, 0])
            used[0] += turn.prompt_tokens
            used[1] += turn.completion_tokens
            return self.check()
        if isinstance(event, RoundFinished):
            return self.check()
        return None

    @property
    def spent(self) -> int:
        return sum(p + c for p, c in self.used.values())

    @property
    def elapsed(self) -> float:
        return self.before + self.clock() - self.started

    def check(self) -> Stop | None:
        """A ``Stop`` for the first budget used up, or None."""
        for name, limit in self.agents.items():
            used = sum(self.used.get(name, [0, 0]))
            if used >= limit:
                return Stop("budget", f"{name}'s tokens: {used:,} of {limit:,}",
                            {"budget": "agent_tokens", "agent": name, "limit": limit, "used": used,
                             "option": "budget_tokens"})
        if self.tokens and self.spent >= self.tokens:
            return Stop("budget", f"tokens: {self.spent:,} of {self.tokens:,}",
                        {"budget": "tokens", "limit": self.tokens, "used": self.spent, "option": "budget_tokens"})
        if self.money:
            prompt = sum(p for p, _ in self.used.values())
            completion = sum(c for _, c in self.used.values())
            dollars = cost(prompt, completion, self.price)
            if dollars >= self.money:
                return Stop("budget", f"money: ${dollars:,.2f} of ${self.money:,.2f} (at ${self.price[0]:g} and "
                            f"${self.price[1]:g} per million prompt and completion tokens)",
                            {"budget": "money", "limit": self.money, "used": round(dollars, 6),
                             "option": "budget_money", "price": list(self.price)})
        if self.max_time and self.elapsed >= self.max_time:
            return Stop("budget", f"time: {short(self.elapsed)} of {short(self.max_time)}",
                        {"budget": "time", "limit": self.max_time, "used": round(self.elapsed, 1),
                         "option": "max_time"})
        if self.deadline is not None:
            now = self.now()
            if now >= self.deadline:
                return Stop("budget", f"until {self.until}: it is {now:%H:%M:%S}",
                            {"budget": "until", "limit": self.until, "used": f"{now:%H:%M:%S}", "option": "until"})
        return None
