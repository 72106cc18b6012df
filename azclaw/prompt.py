"""What an agent is sent each turn: the system prompt, and fitting a turn's
request into the context budget. (The user message, the conversation as
the context mode has it, is rendered in ``context.py``.)

The system prompt puts everything that stays the same across rounds first
(context, role, task, team, rules, tools, a worked example of a good turn)
and what changes last (round, phase), so consecutive prompts of one agent
share a long identical prefix and the server's prompt cache stays warm. It
says truthfully what the context mode sends.
"""

from __future__ import annotations

from .context import ContextMode
from .topic import Phase, Topic

CHARS_PER_TOKEN = 3  # a cautious estimate; the server's own count is in the stats
CUT_RESULT = "[earlier tool result cut to keep this request within the context budget; call again if needed]"

_RULES = """How this team works:
- The work goes in rounds. In each round every agent speaks once.
- {shown}
- Anything that must last (decisions, designs, file layouts, open problems) goes into memory with remember(text, title). Use recall(query) to find earlier decisions, yours and your teammates'.
- Do not repeat a tool call you already made in this turn; work with the results you have.
- End your turn with a short message to the team (under 300 words): what you did, what you decided, what should happen next."""


# a good turn, in words (small models copy a call's syntax into the wrong mode) and from another task
# (small models copy examples word for word: copied text must be plain to see)
EXAMPLE = """A good turn, for example (in a team building a library's loan system):
1. Call recall with the query "loan period". It finds: "Loans last 14 days (by architect)".
2. Build on what you found: once those 14 days are over, a late fee is needed.
3. Call remember with the title "late fee rule" and the text "Late fee: 0.25 a day after the 14-day loan, at most 10.00".
4. End with your message: "Loans stay 14 days, as decided. New: a late fee of 0.25 a day, at most 10.00 (memory 'late fee rule'). Next: the developer adds the fee."
Call a tool only when it helps; a turn may also be only your message."""
FIRST_ROUND = ("Round 1: your turn. Decide what your role can decide now, remember each decision under a title "
               "that names it, and end with your message to the team.")


def describe_tools(tools) -> str:
    return "\n".join(f"- {t.signature()}: {t.description}" for t in tools)


def stable_part(agent, topic: Topic, task: str, team: list, tools, context: ContextMode = ContextMode()) -> str:
    """The part of the system prompt that does not change during a run."""
    parts = []
    if topic.system_context:
        parts.append(topic.system_context.strip())
    role = "\n".join(r.strip() for r in (agent.role, topic.agent_roles.get(agent.name, "")) if r.strip())
    parts.append(f"You are {agent.name}." + (f"\nYour role: {role}" if role else ""))
    parts.append(f"Task: {task.strip() or topic.title}")
    writers = [a.name for a in team if a.can_write]
    team_line = "Team, in speaking order: " + ", ".join(a.name for a in team) + "."
    if agent.can_write:
        team_line += " You write the files and run the code."
    elif writers:
        team_line += f" Only {', '.join(writers)} can write files; ask them to."
    parts.append(team_line)
    parts.append(_RULES.format(shown=context.shown()))
    parts.append("Your tools:\n" + (describe_tools(tools) or "- none"))
    if {"recall", "remember"} <= {t.name for t in tools}:
        parts.append(EXAMPLE)
    return "\n\n".join(parts)


def system_prompt(agent, topic: Topic, task: str, team: list, tools, round_no: int, last_round: int,
                  how_to_call: str = "", context: ContextMode = ContextMode()) -> str:
    """The whole system prompt of ``agent`` in round ``round_no``;
    ``how_to_call`` tells how tool calls are written in its tool mode."""
    stable = stable_part(agent, topic, task, team, tools, context) + (f"\n{how_to_call}" if how_to_call else "")
    return stable + "\n\n" + round_part(round_no, last_round, topic.phase_for(round_no), topic)


def round_part(round_no: int, last_round: int, phase: Phase | None, topic: Topic) -> str:
    """The part of the system prompt that changes with the round."""
    lines = [f"Current round: {round_no} of {last_round}."]
    if phase is not None:
        number = topic.phases.index(phase) + 1
        lines.append(f"Phase {number} of {len(topic.phases)}: {phase.name} "
                     f"(rounds {phase.start}-{phase.end}).")
        if phase.focus:
            lines.append(f"Focus: {phase.focus}")
        if phase.source_files:
            lines.append("Files to study: " + ", ".join(phase.source_files))
    elif topic.phases:
        lines.append("No phase is planned for this round: finish open work, consolidate and review.")
    return "\n".join(lines)


def first_focus(phase: Phase | None) -> str:
    """What round 1's user message says after the task: the phase's focus
    (the system prompt has it too, but small models read the user message)."""
    if phase is not None and phase.focus:
        return f"Round 1, phase {phase.name}: {phase.focus.strip()}"
    return FIRST_ROUND


def request_chars(messages: list[dict]) -> int:
    """The characters a request carries: contents and the arguments of
    earlier tool calls (a write_file of 30 KB is in every later request)."""
    return sum(len(m.get("content") or "") + sum(len(c["function"]["arguments"]) for c in m.get("tool_calls", ()))
               for m in messages)


def fit_messages(messages: list[dict], budget_tokens: int, where: str = "the run journal") -> int:
    """Fit a turn's request into ``budget_tokens``: cut its oldest tool
    results first, then the longest messages (the previous round's, say),
    each with a pointer to ``where`` the full text is. The system prompt is
    never cut. Returns the request's size in characters."""
    budget = budget_tokens * CHARS_PER_TOKEN
    size = _cut_tool_results(messages, budget)
    while size > budget:
        longest = max(messages[1:], key=lambda m: len(m.get("content") or ""), default=None)
        text = (longest or {}).get("content") or ""
        over = size - budget
        keep = max(200, len(text) - over - 200)
        if longest is None or keep >= len(text) - 100:
            break  # nothing worth cutting is left
        note = f"\n[... {len(text) - keep} characters cut to fit the model's context; the full text is in {where}]"
        longest["content"] = text[:keep] + note
        size -= len(text) - len(longest["content"])
    return size


def _cut_tool_results(messages: list[dict], budget: int) -> int:
    size = request_chars(messages)
    last_step = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    for m in messages[2:last_step]:
        if size <= budget:
            break
        is_result = m["role"] == "tool" or (m["role"] == "user" and m["content"].startswith("Result of "))
        if is_result and m["content"] != CUT_RESULT:
            size -= len(m["content"]) - len(CUT_RESULT)
            m["content"] = CUT_RESULT
    return size
