"""The memory-first round loop.

1. Each round, every agent takes one turn (in order, or all at once with
   ``parallel=True``).
2. A turn sends the agent's system prompt and one user message: the initial
   prompt in round 1, later only what every agent said in the previous round.
3. The agent may call tools for a bounded number of steps; repeated calls are
   skipped, and a step of nothing but repeats ends the tool use.
4. Its final text becomes its message for the next round. Older messages are
   never sent again: agents keep what matters with remember() and find it
   with recall().
5. Every 5 rounds, and whenever the run ends, a checkpoint is written; a STOP
   file or a signal ends the run after the current round.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox
from .agent import Agent
from .builtin_tools import build_default_registry
from .checkpoint import HISTORY_KEEP, Checkpoint
from .errors import CheckpointError, ConfigError, EndpointError, RunAborted
from .journal import Journal
from .llm import Completion
from .memory import TeamMemory
from .prompt import MESSAGE_BUDGET, Message, round_message, round_part, stable_part
from .stats import RunStats
from .status import Coherence
from .stopping import StopControl
from .tools import ToolContext, ToolRegistry, ToolResult
from .topic import Probe, Topic

log = logging.getLogger("azclaw")

DEFAULT_ROUNDS = 10
CONTEXT_BUDGET = 12000  # tokens one request may carry before older tool results are cut
CHARS_PER_TOKEN = 3  # a cautious estimate; the server's own count is in the stats
CUT_RESULT = "[earlier tool result cut to keep this request within the context budget; call again if needed]"
ALL_REPEATED = ("Every tool call you just made repeats one you already made in this turn. "
                "Work with the results you have: give your final message to the team now, without tools.")
STEPS_USED = ("You have used all your tool steps for this turn. "
              "Give your final message to the team now, without tools.")


@dataclass
class TurnResult:
    """What one agent's turn produced; applied to the stats when its round ends."""

    agent: str
    round: int
    text: str = ""
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    context_chars: int = 0
    context_tokens: int = 0  # the largest prompt of the turn, as the server counted it
    tool_calls: dict[str, int] = field(default_factory=dict)
    tool_errors: int = 0
    memories: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    empty: bool = False
    truncated: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.errors) and not self.text


class Orchestrator:
    """Runs a team of agents on a task, round after round.

    ``source_dirs`` are the folders agents may read (the output folder is
    always readable); only writers write, and only into ``output_dir``.
    Memories live in each agent's AgentAZAll root under ``agents_dir``.
    """

    def __init__(self, agents: list[Agent], topic: Topic | None = None, output_dir="./output",
                 log_dir="./logs", source_dirs=None, registry: ToolRegistry | None = None,
                 agents_dir="./agents", *, parallel: bool = False, max_tool_steps: int = 8,
                 checkpoint_every: int = 5, stop_file="STOP", message_budget: int = MESSAGE_BUDGET,
                 max_failed_rounds: int = 3, run_python: bool = True, check_health: bool = True,
                 approve=None, context_budget: int = CONTEXT_BUDGET, verbose: bool = True):
        if not agents:
            raise ConfigError("agents: a team needs at least one agent")
        names = [a.name for a in agents]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"agents: name {duplicated[0]!r} is used twice")
        self.agents = list(agents)
        self.topic = topic or Topic(title="task")
        self.task = ""
        self.output_dir = Path(output_dir)
        self.log_dir = Path(log_dir)
        self.source_dirs = [Path(d) for d in (source_dirs or [])]
        for folder in self.source_dirs:
            if not folder.is_dir():
                raise ConfigError(f"source folder {folder}: not found")
        for option, value, least in (("max_tool_steps", max_tool_steps, 0), ("checkpoint_every", checkpoint_every, 1),
                                     ("message_budget", message_budget, 1), ("max_failed_rounds", max_failed_rounds, 1),
                                     ("context_budget", context_budget, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{option}: expected a whole number >= {least}, got {value!r}")
        self.registry = registry or build_default_registry()
        self.agents_dir = Path(agents_dir)
        self.parallel = parallel
        self.max_tool_steps = max_tool_steps
        self.checkpoint_every = checkpoint_every
        self.message_budget = message_budget
        self.max_failed_rounds = max_failed_rounds
        self.run_python = sandbox.python_mode(run_python)
        sandbox.check_output_folder(self.output_dir, self.agents_dir, self.log_dir)
        self.check_health = check_health
        self.approve = approve
        self.context_budget = context_budget
        self.verbose = verbose
        self.stop = StopControl(Path(stop_file))
        try:
            self.memory = TeamMemory({a.name: Path(a.root) if a.root else self.agents_dir / a.name
                                      for a in self.agents})
        except OSError as exc:
            raise ConfigError(f"agent folder {exc.filename}: {exc.strerror}") from None
        self.stats = RunStats()
        for agent in self.agents:
            self.stats.agent(agent.name)
        self.history: list[Message] = []
        self.written_files: set[str] = set()
        self.probe_answers: list[dict] = []
        self.last_round = 0
        self.stop_reason = ""
        self.journal: Journal | None = None

    # -- setup --------------------------------------------------------------
    def set_task(self, text: str) -> None:
        """The task; it opens round 1 when the topic has no initial prompt."""
        self.task = text
        if self.topic.name == "task" and self.topic.title == "task":
            self.topic = Topic.from_task(text)

    @property
    def checkpoint_path(self) -> Path:
        return self.log_dir / f"{self.topic.name}_checkpoint.json"

    @property
    def journal_path(self) -> Path:
        return self.log_dir / f"{self.topic.name}_journal.jsonl"

    def _restore(self, resume) -> int:
        """Load a checkpoint's state; return the last round that run planned."""
        path = self.checkpoint_path if resume is True else Path(resume)
        checkpoint = Checkpoint.load(path)
        if (checkpoint.topic_name, checkpoint.topic_title) != (self.topic.name, self.topic.title):
            raise CheckpointError(f"{path}: checkpoint belongs to topic {checkpoint.topic_name!r} "
                                  f"({checkpoint.topic_title!r}), not {self.topic.name!r} ({self.topic.title!r})")
        self.stats = checkpoint.stats
        for agent in self.agents:
            self.stats.agent(agent.name)
        self.history = checkpoint.history
        self.written_files = set(checkpoint.written_files)
        self.probe_answers = checkpoint.probe_answers
        self.last_round = checkpoint.round
        return checkpoint.max_rounds

    def save_checkpoint(self, max_rounds: int) -> Path:
        """Write the checkpoint of the last completed round."""
        try:
            counts = self.memory.counts()
        except Exception as exc:  # a locked or broken index must not cost the checkpoint
            log.warning("memory counts left out of the checkpoint: %s", exc)
            counts = {}
        checkpoint = Checkpoint(self.topic.name, self.topic.title, self.last_round, max_rounds,
                                self.stats, counts, sorted(self.written_files),
                                self.history[-HISTORY_KEEP:], self.probe_answers)
        path = checkpoint.save(self.checkpoint_path)
        if self.journal:
            self.journal.write("checkpoint", round=self.last_round, path=str(path))
        return path

    # -- the run ------------------------------------------------------------
    def run(self, max_rounds: int | None = None, resume=None) -> RunStats:
        """Run until round ``max_rounds`` (default: the resumed run's own last
        round, else the topic's last phase, else 10), a STOP file, or a
        signal. ``resume`` is a checkpoint path (or True for this topic's
        checkpoint in ``log_dir``)."""
        if max_rounds is not None and (isinstance(max_rounds, bool) or not isinstance(max_rounds, int)
                                       or max_rounds < 1):
            raise ConfigError(f"max_rounds: expected a round number >= 1, got {max_rounds!r}")
        planned = None
        if resume:
            planned = self._restore(resume)
        last = max_rounds or planned or self.topic.last_round or DEFAULT_ROUNDS
        if self.check_health:
            for agent in self.agents:
                agent.client.health_check()
        for option, folder in (("output folder", self.output_dir), ("log folder", self.log_dir)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{option} {folder}: {exc.strerror}") from None
        handlers = self._start_logging()
        # a resume redoes the rounds after its checkpoint: their old lines leave the journal
        self.journal = Journal.open(self.journal_path, resumed_from=self.last_round if resume else None)
        if self.stop.clear_stale():
            log.info("removed a STOP file left from an earlier run: %s", self.stop.stop_file)
        self.stop.install()
        sandbox.protect_process()
        python_sandbox = (sandbox.sandbox_summary(self.run_python) if any(a.can_write for a in self.agents)
                          else "run_python not offered (no writer)")
        first = self.last_round + 1
        self.journal.write("run_start", topic=self.topic.name, title=self.topic.title, first_round=first,
                           last_round=last, agents=[a.name for a in self.agents],
                           resumed_from=self.last_round if resume else None,
                           pid=os.getpid(), host=socket.gethostname(), sandbox=python_sandbox,
                           phases=[{"name": p.name, "rounds": [p.start, p.end]} for p in self.topic.phases],
                           probes=[{"after_round": p.after_round, "question": p.question, "expect": p.expect}
                                   for p in self.topic.coherence_probes])
        log.info("azclaw run %r: rounds %d-%d, agents %s; run_python sandbox: %s", self.topic.title, first, last,
                 ", ".join(a.name for a in self.agents), python_sandbox)
        reason = "finished"
        failed_rounds = 0
        started = time.monotonic()
        try:
            for round_no in range(first, last + 1):
                results = self._run_round(round_no, last)
                with self.stop.deferred():
                    self._apply(results, round_no)
                    self.last_round = round_no
                    self.stats.rounds = round_no
                for probe in self.topic.probes_after(round_no):
                    self._ask_probe(probe, round_no, last)
                failed_rounds = failed_rounds + 1 if all(r.failed for r in results) else 0
                if failed_rounds >= self.max_failed_rounds:
                    reason = "aborted"
                    break
                if round_no % self.checkpoint_every == 0 and round_no != last:
                    self.save_checkpoint(last)
                if self.stop.should_stop():
                    reason = "stopped"
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
            raise
        except BaseException:
            reason = "error"  # the journal must not call a crashed run finished
            raise
        finally:
            self.stop.restore()
            self.stats.elapsed += time.monotonic() - started
            self._finish(reason, last, handlers)
        if reason == "aborted":
            raise RunAborted(f"stopped after {failed_rounds} rounds in which every turn failed; "
                             f"last error: {results[-1].errors[-1]}; checkpoint: {self.checkpoint_path}")
        return self.stats

    def _finish(self, reason: str, last: int, handlers) -> None:
        self.stop_reason = reason if reason != "stopped" else self.stop.reason
        path = self.save_checkpoint(last)
        if reason == "stopped":
            self.stop.consume_stop_file()
            self.journal.write("stop", round=self.last_round, reason=self.stop.reason)
            log.info("stopped after round %d (%s)", self.last_round, self.stop.reason)
        self.journal.write("run_end", round=self.last_round, reason=reason, stats=self.stats.to_dict())
        log.info("checkpoint: %s", path)
        log.info(self.summary())
        self.memory.close()  # the index reopens itself if the orchestrator runs again
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()

    def _start_logging(self) -> list[logging.Handler]:
        log.setLevel(logging.INFO)
        file_handler = logging.FileHandler(self.log_dir / f"{self.topic.name}.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers: list[logging.Handler] = [file_handler]
        if self.verbose:
            console = logging.StreamHandler()
            console.setFormatter(logging.Formatter("%(message)s"))
            handlers.append(console)
        for handler in handlers:
            log.addHandler(handler)
        log.propagate = False
        return handlers

    def summary(self) -> str:
        s = self.stats
        lines = [f"Rounds {s.rounds} | tokens {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion"
                 f" | memories {s.memories_stored} | files {s.files_written} | tool calls {s.tool_calls}"
                 f" | errors {s.errors} | {s.elapsed / 60:.1f} min",
                 f"{'agent':<14}{'tokens':>12}{'tok/s':>8}{'tools':>7}{'memories':>10}{'files':>7}{'errors':>8}"]
        for name, a in s.agents.items():
            lines.append(f"{name:<14}{a.prompt_tokens + a.completion_tokens:>12,}{a.tokens_per_second:>8.1f}"
                         f"{a.tool_calls:>7}{a.memories_stored:>10}{a.files_written:>7}{a.errors:>8}")
        if self.probe_answers:
            lines.append(f"Coherence: {Coherence.of(self.probe_answers)}")
        return "\n".join(lines)

    # -- rounds and turns ---------------------------------------------------
    def _previous(self, round_no: int) -> list[Message]:
        """The messages of the latest round before ``round_no`` that produced
        any: after a round in which every turn failed (a server down, a
        resume after an abort) the team goes on from the last words it had."""
        latest = max((m.round for m in self.history if m.round < round_no), default=None)
        return [m for m in self.history if m.round == latest]

    def _run_round(self, round_no: int, last: int) -> list[TurnResult]:
        previous = self._previous(round_no)
        user = round_message(round_no, previous, self.topic.initial_prompt or self.task,
                             self.message_budget, str(self.journal_path))
        if self.parallel and len(self.agents) > 1:
            return _in_threads([lambda a=a: self._turn(a, round_no, last, user) for a in self.agents])
        return [self._turn(a, round_no, last, user) for a in self.agents]

    def _system_prompt(self, agent: Agent, round_no: int, last: int, tools) -> str:
        return (stable_part(agent, self.topic, self.task, self.agents, tools) + "\n\n"
                + round_part(round_no, last, self.topic.phase_for(round_no), self.topic))

    def _turn(self, agent: Agent, round_no: int, last: int, user: str) -> TurnResult:
        result = self._converse(agent, round_no, last, user, self.registry.allowed(agent.can_write, agent.tools))
        phase = self.topic.phase_for(round_no)
        per_s = result.completion_tokens / result.seconds if result.seconds else 0.0
        tools = ", ".join(f"{n}x{c}" if c > 1 else n for n, c in result.tool_calls.items()) or "no tools"
        log.info("[round %d/%d] %s: %d+%d tok, %.1f tok/s, %s%s", round_no, last, agent.name,
                 result.prompt_tokens, result.completion_tokens, per_s, tools,
                 f", ERROR {result.errors[-1]}" if result.errors else "")
        self.journal.write("turn", round=round_no, phase=phase.name if phase else None, agent=agent.name,
                           prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                           context_tokens=result.context_tokens, context_chars=result.context_chars,
                           requests=result.requests, seconds=round(result.seconds, 3),
                           tokens_per_second=round(per_s, 2), tool_calls=result.tool_calls,
                           tool_errors=result.tool_errors, memories=result.memories, files=result.files,
                           errors=result.errors, text=result.text)
        return result

    def _converse(self, agent: Agent, round_no: int, last: int, user: str, tools) -> TurnResult:
        """One agent's turn: model calls and tool steps until a final text."""
        result = TurnResult(agent.name, round_no)
        ctx = ToolContext(agent=agent.name, can_write=agent.can_write, output_dir=self.output_dir,
                          source_dirs=self.source_dirs, memory=self.memory, round=round_no,
                          run_python_enabled=self.run_python, approve=self.approve)
        messages = [{"role": "system", "content": self._system_prompt(agent, round_no, last, tools)},
                    {"role": "user", "content": user}]
        schemas = [t.schema() for t in tools] or None
        seen: set[str] = set()
        used_ids: set[str] = set()
        for step in range(self.max_tool_steps + 1):
            if step == self.max_tool_steps and schemas:
                messages.append({"role": "user", "content": STEPS_USED})
                schemas = None
            completion = self._call(agent, messages, schemas, result)
            if completion is None:
                break
            if not completion.tool_calls or not schemas:
                result.text = completion.text
                break
            results = []
            for n, call in enumerate(completion.tool_calls):
                # servers that number calls per reply (call_0 every step) would pair a
                # result with the wrong call; strict APIs refuse a repeated id outright
                if call.id in used_ids:
                    call.id = f"{call.id}_s{step}_{n}"
                used_ids.add(call.id)
                key = f"{call.name}\x00{call.raw_arguments if call.arguments is None else json.dumps(call.arguments, sort_keys=True)}"
                if key in seen:
                    results.append(ToolResult(call.id, call.name, "[duplicate call skipped: its result is "
                                              "already above in this turn]", duplicate=True))
                    continue
                seen.add(key)
                outcome = self.registry.execute(call, ctx, tools)
                result.tool_calls[call.name] = result.tool_calls.get(call.name, 0) + 1
                result.tool_errors += not outcome.ok
                results.append(outcome)
            _append_tool_round(messages, completion, results)
            if all(r.duplicate for r in results):
                messages.append({"role": "user", "content": ALL_REPEATED})
                schemas = None
        result.memories = list(ctx.memories_stored)
        result.files = list(ctx.files_written)
        if not result.text and not result.errors:
            result.empty = True
        return result

    def _fit(self, agent: Agent, messages: list[dict]) -> int:
        """Cut the oldest tool results of the turn until the request fits the
        context budget; warn when it still does not. Returns its size in chars."""
        tokens = agent.context_budget or self.context_budget
        budget = tokens * CHARS_PER_TOKEN
        # the arguments of earlier calls travel too: a write_file of 30 KB is in every later request
        size = sum(len(m.get("content") or "") + sum(len(c["function"]["arguments"]) for c in m.get("tool_calls", ()))
                   for m in messages)
        last_step = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        for m in messages[2:last_step]:
            if size <= budget:
                break
            is_result = m["role"] == "tool" or (m["role"] == "user" and m["content"].startswith("Result of "))
            if is_result and m["content"] != CUT_RESULT:
                size -= len(m["content"]) - len(CUT_RESULT)
                m["content"] = CUT_RESULT
        if size > budget:
            log.warning("%s: a request of about %d tokens exceeds the context budget of %d tokens",
                        agent.name, size // CHARS_PER_TOKEN, tokens)
        return size

    def _call(self, agent: Agent, messages, schemas, result: TurnResult) -> Completion | None:
        result.context_chars = max(result.context_chars, self._fit(agent, messages))
        try:
            completion = agent.client.chat(messages, schemas, agent.max_tokens, agent.temperature)
        except EndpointError as exc:
            result.errors.append(str(exc))
            return None
        result.requests += 1
        result.prompt_tokens += completion.usage.prompt_tokens
        result.context_tokens = max(result.context_tokens, completion.usage.prompt_tokens)
        result.completion_tokens += completion.usage.completion_tokens
        result.seconds += completion.seconds
        result.truncated += completion.finish_reason == "length"
        return completion

    def _tally(self, r: TurnResult) -> None:
        """Add what a turn (or a probe answer) cost and did to the stats."""
        s, a = self.stats, self.stats.agent(r.agent)
        calls = sum(r.tool_calls.values())
        a.requests += r.requests
        a.prompt_tokens += r.prompt_tokens
        a.completion_tokens += r.completion_tokens
        a.seconds += r.seconds  # with its tokens, so tok/s stays a true rate
        a.tool_calls += calls
        a.tool_errors += r.tool_errors
        a.memories_stored += len(r.memories)
        a.errors += len(r.errors)
        a.empty_replies += r.empty
        a.truncated_replies += r.truncated
        s.prompt_tokens += r.prompt_tokens
        s.completion_tokens += r.completion_tokens
        s.tool_calls += calls
        s.memories_stored += len(r.memories)
        s.errors += len(r.errors)

    def _apply(self, results: list[TurnResult], round_no: int) -> None:
        """Fold a finished round into the stats and the history."""
        for r in results:
            self._tally(r)
            a = self.stats.agent(r.agent)
            a.turns += 1
            a.files_written += len({f for f in r.files if f not in self.written_files})
            self.written_files.update(r.files)
            if r.text:
                self.history.append(Message(round_no, r.agent, r.text))
        self.stats.files_written = len(self.written_files)
        del self.history[:-HISTORY_KEEP]

    def _ask_probe(self, probe: Probe, round_no: int, last: int) -> None:
        """Ask every agent the probe's question; only recall is offered."""
        question = (f"Coherence check after round {round_no}: {probe.question}\n"
                    "Answer from what you know; use recall to look it up. Answer in a few sentences.")
        for agent in self.agents:
            tools = [t for t in self.registry.allowed(agent.can_write, agent.tools) if t.name == "recall"]
            result = self._converse(agent, round_no, last, question, tools)
            correct = probe.score(result.text)
            answer = {"round": round_no, "agent": agent.name, "question": probe.question,
                      "answer": result.text, "correct": correct}
            self.probe_answers.append(answer)
            self._tally(result)
            phase = self.topic.phase_for(round_no)
            self.journal.write("probe", **answer, phase=phase.name if phase else None, expect=probe.expect,
                               prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                               seconds=round(result.seconds, 3))
            log.info("[probe after round %d] %s: %s%s", round_no, agent.name, result.text[:200],
                     "" if correct is None else f" ({'correct' if correct else 'WRONG'})")


def _append_tool_round(messages: list[dict], completion: Completion, results: list[ToolResult]) -> None:
    """Add a tool step to the turn's messages. Calls the model wrote as text
    get their results as text too: templates that do not know tool calls
    often reject the ``tool`` role."""
    if completion.text_calls:
        messages.append({"role": "assistant", "content": completion.text or "(calling tools)"})
        body = "\n\n".join(f"Result of {r.name}:\n{r.content}" for r in results)
        messages.append({"role": "user", "content": body})
        return
    messages.append({"role": "assistant", "content": completion.text or "", "tool_calls": [
        {"id": c.id, "type": "function",
         "function": {"name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments or {})}}
        for c in completion.tool_calls]})
    for r in results:
        messages.append({"role": "tool", "tool_call_id": r.call_id, "name": r.name, "content": r.content})


def _in_threads(jobs: list) -> list:
    """Run ``jobs`` at once and return their results in order. Daemon
    threads, so a second Ctrl+C can end the process without waiting for
    requests still in flight."""
    results: list = [None] * len(jobs)
    failures: list = [None] * len(jobs)

    def work(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # re-raised in the caller's thread
            failures[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"azclaw-turn-{i}")
               for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for failure in failures:
        if failure is not None:
            raise failure
    return results
