"""What the team said, round by round: as text (``azclaw show``) and as
the HTML transcript of the report.

Both read ``Turn`` records (and the journal's probe answers); tool calls
come from ``Turn.calls``, the audit trail. In HTML everything a model
wrote is escaped; in text it goes through ``azclaw.safetext`` (no terminal
escapes), and what a model wrote is indented, so that none of its lines can
pass for a round's header or a speaker's line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..safetext import indented, one_line, printable
from ..turn import ToolUse, Turn
from .common import escape as _e

OPEN_ROUNDS = 3  # the newest rounds of the HTML transcript start open; older ones are one line each
PREVIEW_CHARS = 90


@dataclass(frozen=True)
class Selection:
    """Which turns to show: a range of rounds (inclusive) and one agent, or all."""

    first: int | None = None
    last: int | None = None
    agent: str | None = None

    def __contains__(self, turn: Turn) -> bool:
        return ((self.first is None or turn.round >= self.first) and (self.last is None or turn.round <= self.last)
                and (self.agent is None or turn.agent == self.agent))


# -- text -----------------------------------------------------------------------

def round_header(round_no: int, last_round: int = 0, phase: str | None = None) -> str:
    where = f"round {round_no}/{last_round}" if last_round else f"round {round_no}"
    return f"=== {where}" + (f", phase {one_line(phase)}" if phase else "") + " ==="


def turn_text(turn: Turn, tools: bool = False) -> str:
    """One turn as ``azclaw show`` prints it: who, what it cost, its tool
    calls (with ``tools``: arguments and results), then its message."""
    lines = [f"[{one_line(turn.agent)}] {_turn_meta(turn)}"]
    if tools and turn.calls:
        for use in turn.calls:
            lines.extend(call_text(use))
        lines.append("")
    elif turn.calls:
        lines.append("  tools: " + ", ".join(_call_name(u) for u in turn.calls))
    lines.append(_message(turn))
    return "\n".join(lines).rstrip() + "\n"


def probe_text(answer: dict) -> str:
    correct = {True: "correct", False: "wrong", None: "not scored"}.get(answer.get("correct"), "not scored")
    return (f"[{one_line(answer.get('agent'))}] probe: {one_line(answer.get('question'), 200)} ({correct})\n"
            f"{indented(str(answer.get('answer') or '').strip() or '(no answer)')}\n")


def call_text(use: ToolUse) -> list[str]:
    """A tool call as indented lines: the tool, each argument, the result."""
    state = (("repeat, not run again" if use.ok else "repeat of a failed call, not run again") if use.duplicate
             else "ok" if use.ok else "FAILED")
    lines = [f"  > {one_line(use.tool)} ({state}, {use.seconds:.2f} s)"]
    if not use.duplicate:
        for name, value in arguments(use.arguments):
            lines.extend(_block(name, value))
        lines.extend(_block("result", use.result))
    return lines


def _block(name: str, value: str) -> list[str]:
    name, text = one_line(name), printable(value).rstrip("\n")
    if "\n" not in text and len(text) <= 100:
        return [f"    {name}: {text}"]
    return [f"    {name}:"] + [f"      {line}" for line in text.splitlines()]


def _turn_meta(turn: Turn) -> str:
    bits = [f"{turn.seconds:.1f} s", f"{turn.prompt_tokens:,}+{turn.completion_tokens:,} tokens"]
    if turn.calls:
        n = len(turn.calls)
        bits.append(f"{n} tool call{'s' if n != 1 else ''}")
    if turn.tool_errors:
        bits.append(f"{turn.tool_errors} failed")
    return "(" + ", ".join(bits) + ")"


def _message(turn: Turn) -> str:
    if turn.text.strip():
        return indented(turn.text.strip())
    if turn.errors:
        return f"  (no message: {one_line(turn.errors[-1], 300)})"
    return "  (empty reply)"


def _call_name(use: ToolUse) -> str:
    return one_line(use.tool) + ("" if use.ok else " (failed)") + (" (repeat)" if use.duplicate else "")


def arguments(raw: str) -> list[tuple[str, str]]:
    """A call's arguments as (name, text) pairs; what is not a JSON object
    is one pair named "arguments"."""
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return [("arguments", raw)]
    if not isinstance(data, dict):
        return [("arguments", raw)]
    # what JSON escapes may hold (a lone surrogate) must still print
    return [(printable(str(k)), printable(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
            for k, v in data.items()]




# -- HTML -----------------------------------------------------------------------

def transcript_html(turns: list[Turn], probes: list[dict], open_rounds: int = OPEN_ROUNDS) -> str:
    """Every round as a ``<details>`` (the newest ``open_rounds`` open), each
    agent's message and its tool calls inside. Each round carries an ``id``
    and a ``data-v`` digest of its content, so a live page can tell which
    rounds changed."""
    rounds: dict[int, list] = {}
    for turn in turns:
        rounds.setdefault(turn.round, []).append(turn)
    for answer in probes:
        rounds.setdefault(int(answer.get("round") or 0), []).append(answer)
    if not rounds:
        return '<p class="note">No finished turns yet.</p>'
    order = sorted(rounds)
    opened = set(order[-open_rounds:]) if open_rounds > 0 else set()
    return "\n".join(_round_html(r, rounds[r], r in opened) for r in order)


def _round_html(round_no: int, items: list, is_open: bool) -> str:
    turns = [t for t in items if isinstance(t, Turn)]
    answers = [a for a in items if isinstance(a, dict)]
    phase = next((t.phase for t in turns if t.phase), None)
    calls = sum(len(t.calls) for t in turns)
    tool_errors = sum(t.tool_errors for t in turns)
    failed = [t.agent for t in turns if t.failed]
    meta = [f"phase {_e(phase)}"] if phase else []
    meta.append(f"{len(turns)} turn{'s' if len(turns) != 1 else ''}")
    if calls:
        meta.append(f"{calls} tool call{'s' if calls != 1 else ''}"
                    + (f' (<span class="bad">{tool_errors} failed</span>)' if tool_errors else ""))
    if answers:
        meta.append(f"{len(answers)} probe answer{'s' if len(answers) != 1 else ''}")
    if failed:
        meta.append(f'<span class="bad">no message from {_e(", ".join(failed))}</span>')
    said = next((t for t in turns if t.text.strip()), None)
    if said:  # what the round was about, at a glance
        meta.append(f'<span class="said">{_e(said.agent)}: {_e(one_line(said.text, 160))}</span>')
    body = "".join(_turn_html(t, n) for n, t in enumerate(turns)) + "".join(_probe_html(a) for a in answers)
    digest = hashlib.sha1(body.encode("utf-8")).hexdigest()[:12]
    return (f'<details class="round" id="round-{round_no}" data-v="{digest}"{" open" if is_open else ""}>'
            f'<summary><span class="rn">Round {round_no}</span> <span class="meta">{" &middot; ".join(meta)}'
            f"</span></summary>{body}</details>")


def _turn_html(turn: Turn, n: int) -> str:
    cost = (f"{turn.seconds:.1f} s &middot; {turn.prompt_tokens:,}+{turn.completion_tokens:,} tokens"
            + (f" &middot; {turn.tokens_per_second:.1f} tok/s" if turn.seconds else ""))
    uses = "".join(_call_html(u, f"r{turn.round}-t{n}-c{i}") for i, u in enumerate(turn.calls))
    if turn.text.strip():
        message = f'<div class="msg">{_e(turn.text.strip())}</div>'
    elif turn.errors:
        message = f'<div class="msg bad">no message: {_e(turn.errors[-1])}</div>'
    else:
        message = '<div class="msg note">(empty reply)</div>'
    extras = []
    if turn.memories:
        extras.append("remembered " + ", ".join(f"&ldquo;{_e(m)}&rdquo;" for m in turn.memories))
    if turn.files:
        extras.append("wrote " + ", ".join(f"<code>{_e(f)}</code>" for f in turn.files))
    extra = f'<p class="note">{"; ".join(extras)}</p>' if extras else ""
    return (f'<article class="turn"><div class="who"><b>{_e(turn.agent)}</b> <span class="meta">{cost}</span></div>'
            f"{uses}{message}{extra}</article>")


def _call_html(use: ToolUse, key: str) -> str:
    state = ('<span class="note">repeat, not run</span>' if use.duplicate and use.ok
             else '<span class="bad">repeat of a failed call, not run</span>' if use.duplicate
             else '<span class="ok">ok</span>' if use.ok else '<span class="bad">error</span>')
    pairs = arguments(use.arguments)
    preview = one_line(", ".join(f"{k}: {v}" for k, v in pairs), PREVIEW_CHARS)
    rows = "".join(f'<div class="k">{_e(k)}</div><pre>{_e(v)}</pre>' for k, v in pairs)
    cut = []
    if use.arguments_chars > len(use.arguments):
        cut.append(f"arguments {use.arguments_chars:,} characters")
    if use.result_chars > len(use.result):
        cut.append(f"result {use.result_chars:,} characters")
    note = f'<p class="note">cut in the journal; in full: {", ".join(cut)}</p>' if cut else ""
    return (f'<details class="call" id="{key}"><summary><code>{_e(use.tool)}</code> {state} '
            f'<span class="meta">{use.seconds:.2f} s</span> <span class="preview">{_e(preview)}</span></summary>'
            f'{rows}<div class="k">result</div><pre>{_e(use.result)}</pre>{note}</details>')


def _probe_html(answer: dict) -> str:
    verdict = {True: ('ok', "correct"), False: ('bad', "wrong")}.get(answer.get("correct"), ("note", "not scored"))
    text = str(answer.get("answer") or "").strip()
    return (f'<article class="turn probe"><div class="who"><b>{_e(answer.get("agent"))}</b> '
            f'<span class="meta">answering the probe &ldquo;{_e(answer.get("question"))}&rdquo;</span> '
            f'<span class="{verdict[0]}">{verdict[1]}</span></div>'
            f'<div class="msg">{_e(text) or "(no answer)"}</div></article>')


CSS = """
details.round { border: 1px solid #e1e1e1; border-radius: 6px; margin: 3px 0; background: #fff; }
details.round > summary { cursor: pointer; padding: 3px 10px; background: #fafafa; border-radius: 6px;
                          white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
details.round .said { color: #333; font-size: 12px; }
details.round[open] > summary { border-bottom: 1px solid #e1e1e1; border-radius: 6px 6px 0 0; }
details.round .rn { font-weight: 600; } .meta { color: #666; font-size: 12px; }
article.turn { padding: 8px 12px; border-bottom: 1px solid #f0f0f0; }
article.turn:last-child { border-bottom: 0; } article.probe { background: #fbfaf4; }
.who { margin-bottom: 4px; } .who b { color: #0b4f8a; }
.msg { white-space: pre-wrap; overflow-wrap: anywhere; }
details.call { margin: 4px 0 6px; border-left: 3px solid #d0d7de; padding: 2px 8px; background: #f6f8fa; }
details.call > summary { cursor: pointer; font-size: 13px; overflow: hidden; text-overflow: ellipsis;
                         white-space: nowrap; }
details.call .preview { color: #555; font-family: monospace; font-size: 12px; }
details.call .k { color: #666; font-size: 12px; margin-top: 4px; }
details.call pre { margin: 2px 0; padding: 4px 6px; background: #fff; border: 1px solid #e5e5e5; font-size: 12px;
                   white-space: pre-wrap; overflow-wrap: anywhere; max-height: 24em; overflow-y: auto; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
"""
