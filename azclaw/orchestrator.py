"""The memory-first round loop.

1. Each round, every agent takes one turn (in order, or all at once with
   ``parallel=True``).
2. A turn sends the agent's system prompt and one user message: the initial
   prompt in round 1, later only what every agent said in the previous round.
3. The agent may call tools for a bounded number of steps (``turn.py``).
4. Its final text becomes its message for the next round. Older messages are
   never sent again: agents keep what matters with remember() and find it
   with recall().
5. Every 5 rounds, and whenever the run ends, a checkpoint is written; a STOP
   file or a signal ends the run after the current round.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from .tools import sandbox
from .agent import Agent
from .tools.builtin import build_default_registry
from .checkpoint import HISTORY_KEEP, Checkpoint, RunState
from .context import ContextMode
from .errors import CheckpointError, ConfigError, RunAborted, StorageError
from .files import RunLock, sweep_temporary
from .memory import TeamMemory
from .console import RunConsole
from .parallel import in_threads
from .prompt import CHARS_PER_TOKEN, CONTEXT_BUDGET, MESSAGE_BUDGET, system_prompt
from .resume import take_up
from .runlog.journal import Journal
from .stats import RunStats
from .stopping import StopControl
from .tools.registry import ToolContext, ToolRegistry
from .topic import Probe, Topic
from .toolmodes import instructions
from .turn import DEFAULT_TOOL_STEPS, Turn, take_turn

DEFAULT_ROUNDS = 10


class Orchestrator:
    """Runs a team of agents on a task, round after round.

    ``source_dirs`` are the folders agents may read (the output folder is
    always readable); only writers write, and only into ``output_dir``.
    Memories live in each agent's AgentAZAll root under ``agents_dir``, or in
    the ``memory`` given (a TeamMemory holding every agent of the team).
    """

    def __init__(self, agents: list[Agent], topic: Topic | None = None, output_dir="./output",
                 log_dir="./logs", source_dirs=None, registry: ToolRegistry | None = None,
                 agents_dir="./agents", *, memory: TeamMemory | None = None, parallel: bool = False,
                 max_tool_steps: int = DEFAULT_TOOL_STEPS, checkpoint_every: int = 5, stop_file="STOP",
                 message_budget: int = MESSAGE_BUDGET, max_failed_rounds: int = 3, run_python: bool = True,
                 check_health: bool = True, approve=None, context_budget: int = CONTEXT_BUDGET,
                 context: str | ContextMode | None = None, verbose: bool = True):
        names = [a.name for a in agents]
        if not agents:
            raise ConfigError("agents: a team needs at least one agent")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"agents: name {duplicated[0]!r} is used twice")
        for option, value, least in (("max_tool_steps", max_tool_steps, 0), ("checkpoint_every", checkpoint_every, 1),
                                     ("message_budget", message_budget, 1), ("max_failed_rounds", max_failed_rounds, 1),
                                     ("context_budget", context_budget, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{option}: expected a whole number >= {least}, got {value!r}")
        # None: memory, or on resume the mode the run was started in
        self._context_given = None if context is None else ContextMode.parse(context)
        self.context = self._context_given or ContextMode()
        self.agents = list(agents)
        self.topic = topic or Topic(title="task")
        self.task = ""
        self.output_dir, self.log_dir, self.agents_dir = Path(output_dir), Path(log_dir), Path(agents_dir)
        self.source_dirs = [Path(d) for d in (self.topic.source_dirs if source_dirs is None else source_dirs)]
        for folder in self.source_dirs:
            if not folder.is_dir():
                raise ConfigError(f"source folder {folder}: not found")
        self.registry = registry or build_default_registry()
        self.parallel, self.max_tool_steps, self.checkpoint_every = parallel, max_tool_steps, checkpoint_every
        self.message_budget, self.max_failed_rounds, self.context_budget = message_budget, max_failed_rounds, context_budget
        self.check_health, self.approve, self.verbose = check_health, approve, verbose
        self.run_python = sandbox.python_mode(run_python)
        sandbox.check_output_folder(self.output_dir, self.agents_dir, self.log_dir)
        self.stop = StopControl(Path(stop_file))
        self.memory = memory if memory is not None else _team_memory(self.agents, self.agents_dir)
        missing = [n for n in names if n not in self.memory.roots]
        if missing:
            raise ConfigError(f"memory: no AgentAZAll root for agent {missing[0]!r}")
        self.state = self._fresh_state()
        self._empty_streak: dict[str, int] = {}
        self.stop_reason = ""
        self.journal: Journal | None = None
        self.progress: RunConsole | None = None

    # -- what the run has done (the state the checkpoint holds) --------------
    stats = property(lambda self: self.state.stats)
    history = property(lambda self: self.state.history)
    probe_answers = property(lambda self: self.state.probe_answers)
    last_round = property(lambda self: self.state.round)

    def _fresh_state(self) -> RunState:
        state = RunState(stats=RunStats(), keep=self.context.history_keep(len(self.agents), HISTORY_KEEP))
        for agent in self.agents:
            state.stats.agent(agent.name)
        return state

    def set_task(self, text: str, name: str | None = None) -> None:
        """The task; it opens round 1 when the topic has no initial prompt.
        Without a topic, the run is named from the task (or ``name``)."""
        self.task = text
        if self.topic.name == "task" and self.topic.title == "task":
            self.topic = Topic.from_task(text, name)

    @property
    def checkpoint_path(self) -> Path:
        return self.log_dir / f"{self.topic.name}_checkpoint.json"

    @property
    def journal_path(self) -> Path:
        return self.log_dir / f"{self.topic.name}_journal.jsonl"

    # -- the run ------------------------------------------------------------
    def run(self, max_rounds: int | None = None, resume=None) -> RunStats:
        """Run until round ``max_rounds`` (default: the resumed run's own last
        round, else the topic's last phase, else 10), a STOP file, or a
        signal. ``resume`` is a checkpoint path, or True: this topic's
        checkpoint in ``log_dir`` and the rounds its journal shows finished
        after it (the journal alone when no checkpoint was written yet)."""
        last = self._start(max_rounds, resume)
        reason, round_no, failed, started = "finished", self.last_round + 1, 0, time.monotonic()
        try:
            while round_no <= last:
                turns = self._run_round(round_no, last)
                failed = failed + 1 if all(t.failed for t in turns) else 0
                if failed:  # nothing came back: the round is not done, and is run again
                    for turn in turns:
                        self.stats.add(turn.retry())
                    self.progress.warning("round %d: every turn failed (%s); it runs again", round_no,
                                          turns[-1].errors[-1])
                else:
                    with self.stop.deferred():  # a round is folded in whole, or not at all
                        self.state.add_round(round_no, turns)
                        self.memory.archive_round(round_no, [(t.agent, t.text) for t in turns if t.text],
                                                  on_error=self.progress.warning)  # the rounds are searchable too
                    for probe in self.topic.probes_after(round_no):
                        self._ask_probe(probe, round_no, last)
                    self.journal.write("round_end", round=round_no)
                    round_no += 1
                quiet = self._silent_agents(turns)
                if failed >= self.max_failed_rounds or quiet:
                    reason = "aborted"
                    break
                if not failed and (round_no - 1) % self.checkpoint_every == 0 and round_no <= last:
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
            self._finish(reason, last)
        if reason == "aborted":
            why = (f"{failed} rounds in which every turn failed (round {round_no}, tried {failed} times); "
                   f"last error: {turns[-1].errors[-1]}" if failed else
                   f"{', '.join(quiet)} gave only empty replies for {self.max_failed_rounds} rounds in a row")
            raise RunAborted(f"stopped after {why}; checkpoint: {self.checkpoint_path}")
        return self.stats

    def _announce_stop(self, why: str) -> None:
        self.progress.warning("%s: stopping after round %d finishes; press Ctrl+C again to stop now", why,
                              self.last_round + 1)
        for agent in self.agents:  # a wait for a server that is down ends now; the round is then not done
            if agent.client.cancel is None:
                agent.client.cancel = threading.Event()
            agent.client.cancel.set()

    def _silent_agents(self, turns: list[Turn]) -> list[str]:
        """Agents whose last ``max_failed_rounds`` turns were all empty replies."""
        for turn in turns:
            self._empty_streak[turn.agent] = self._empty_streak.get(turn.agent, 0) + 1 if turn.empty else 0
        return [name for name, streak in self._empty_streak.items() if streak >= self.max_failed_rounds]

    def _run_round(self, round_no: int, last: int) -> list[Turn]:
        jobs = [lambda a=a: self._turn(a, round_no, last) for a in self.agents]
        return in_threads(jobs) if self.parallel and len(jobs) > 1 else [job() for job in jobs]

    def _conversation(self, agent: Agent, round_no: int, last: int, tools, closing: str | None = None):
        """What of the team's conversation ``agent`` is sent (the context mode)."""
        room = 0
        if self.context.kind != "memory":  # the budget's room once the system prompt is in
            room = (agent.context_budget or self.context_budget) * CHARS_PER_TOKEN - len(
                system_prompt(agent, self.topic, self.task, self.agents, tools, round_no, last))
        return self.context.conversation(round_no if closing is None else round_no + 1, self.state.history,
                                         self.topic.initial_prompt or self.task, room, self.message_budget,
                                         str(self.journal_path), closing)

    def _turn(self, agent: Agent, round_no: int, last: int) -> Turn:
        self.journal.write("turn_start", round=round_no, agent=agent.name)
        tools = self.registry.allowed(agent.can_write, agent.tools)
        conversation = self._conversation(agent, round_no, last, tools)
        turn = self._take_turn(agent, round_no, last, conversation.text, tools)
        turn.dropped = conversation.dropped
        if conversation.dropped:
            self.progress.info("%s: %d earlier messages left out to fit the context budget", agent.name,
                               conversation.dropped)
        tools = ", ".join(f"{n}x{c}" if c > 1 else n for n, c in turn.tool_calls.items()) or "no tools"
        self.progress.info("[round %d/%d] %s: %d+%d tok, %.1f tok/s, %s%s", round_no, last, agent.name,
                           turn.prompt_tokens, turn.completion_tokens, turn.tokens_per_second, tools,
                           f", ERROR {turn.errors[-1]}" if turn.errors else "")
        for problem in dict.fromkeys(turn.problems):
            self.progress.warning("%s: %s", agent.name, problem)
        if turn.switched:
            self.progress.warning("%s: tool calls now go constrained (JSON by a schema): %s", agent.name,
                                  turn.switched)
            self.journal.write("tool_mode", round=round_no, agent=agent.name, mode=turn.mode, reason=turn.switched)
        self.journal.write("turn", **turn.to_dict())
        return turn

    def _take_turn(self, agent: Agent, round_no: int, last: int, user: str, tools, probe: bool = False) -> Turn:
        ctx = ToolContext(agent=agent.name, can_write=agent.can_write, output_dir=self.output_dir,
                          source_dirs=self.source_dirs, memory=self.memory, round=round_no,
                          run_python_enabled=self.run_python, approve=self.approve)
        phase = self.topic.phase_for(round_no)
        how = instructions(agent.active_mode, tools, agent.max_tokens)
        return take_turn(agent, system_prompt(agent, self.topic, self.task, self.agents, tools, round_no, last, how),
                         user, tools, self.registry, ctx, phase=phase.name if phase else None, probe=probe,
                         max_steps=self.max_tool_steps, context_budget=agent.context_budget or self.context_budget,
                         on_delta=self.progress.follow(agent.name, round_no, last))

    def _ask_probe(self, probe: Probe, round_no: int, last: int) -> None:
        """Ask every agent the probe's question; only recall is offered."""
        question = (f"Coherence check after round {round_no}: {probe.question}\n"
                    "Answer from what you know; use recall to look it up. Answer in a few sentences.")
        for agent in self.agents:
            tools = [t for t in self.registry.allowed(agent.can_write, agent.tools) if t.name == "recall"]
            conversation = self._conversation(agent, round_no, last, tools, closing=question)
            turn = self._take_turn(agent, round_no, last, conversation.text, tools, probe=True)
            turn.dropped = conversation.dropped
            correct = probe.score(turn.text)
            answer = self.state.add_probe(turn, probe.question, correct)
            self.journal.write("probe", **{**turn.to_dict(), **answer, "expect": probe.expect})
            self.progress.info("[probe after round %d] %s: %s%s", round_no, agent.name, turn.text[:200],
                               "" if correct is None else f" ({'correct' if correct else 'WRONG'})")

    # -- start, checkpoint, finish -------------------------------------------
    def _start(self, max_rounds: int | None, resume) -> int:
        """Everything before round one; returns the last round to run."""
        if max_rounds is not None and (isinstance(max_rounds, bool) or not isinstance(max_rounds, int)
                                       or max_rounds < 1):
            raise ConfigError(f"max_rounds: expected a round number >= 1, got {max_rounds!r}")
        for option, folder in (("output folder", self.output_dir), ("log folder", self.log_dir)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{option} {folder}: {exc.strerror}") from None
        self._lock = RunLock(self.log_dir / f"{self.topic.name}.lock", f"topic {self.topic.name!r}").acquire()
        try:
            planned = self._restore(resume) if resume else None
            if self.check_health:
                for agent in self.agents:
                    agent.client.health_check()
                    agent.fit_to_server(self.context_budget)
        except BaseException:
            self._lock.release()
            raise
        last = max_rounds or planned or self.topic.last_round or DEFAULT_ROUNDS
        sweep_temporary(self.log_dir, [self.checkpoint_path.name, self.journal_path.name])
        for agent in self.agents:
            if agent.client.cancel is not None:
                agent.client.cancel.clear()  # a Ctrl+C of an earlier run of these agents is done with
        self.progress = RunConsole(self.log_dir / f"{self.topic.name}.log", console=self.verbose)
        # a resume redoes the rounds after the last finished one: their old lines leave the journal
        self.journal = Journal.open(self.journal_path, resumed_from=self.last_round if resume else None)
        if self.stop.clear_stale():
            self.progress.info("removed a STOP file left from an earlier run: %s", self.stop.stop_file)
        self.stop.install(announce=self._announce_stop)
        sandbox.protect_process()  # same-user processes (model-written code) cannot read our memory or environ
        python_sandbox = (sandbox.sandbox_summary(self.run_python) if any(a.can_write for a in self.agents)
                          else "run_python not offered (no writer)")
        self.journal.write("run_start", topic=self.topic.name, title=self.topic.title, first_round=self.last_round + 1,
                           last_round=last, agents=[a.name for a in self.agents], context=str(self.context),
                           context_budget=self.context_budget,
                           resumed_from=self.last_round if resume else None, pid=os.getpid(),
                           host=socket.gethostname(), sandbox=python_sandbox,
                           phases=[{"name": p.name, "rounds": [p.start, p.end]} for p in self.topic.phases],
                           probes=[{"after_round": p.after_round, "question": p.question, "expect": p.expect}
                                   for p in self.topic.coherence_probes])
        self.progress.info("azclaw run %r: rounds %d-%d, agents %s%s; run_python: %s", self.topic.title,
                           self.last_round + 1, last, ", ".join(a.name for a in self.agents),
                           "" if self.context.kind == "memory" else f", context {self.context}", python_sandbox)
        missing = self.topic.missing_sources(self.source_dirs)
        if missing:
            self.progress.warning("the topic's phases name source files that no source folder holds: %s "
                                  "(give their folder with --source)", ", ".join(missing))
        return last

    def _restore(self, resume) -> int | None:
        """Take up an interrupted run's state; return the last round it planned."""
        found = take_up(resume, self.checkpoint_path, self.journal_path, self.topic.name, self.topic.title)
        self._resume_context(found.context, found.source)
        found.state.keep = self.context.history_keep(len(self.agents), HISTORY_KEEP)
        self.state = found.state
        for agent in self.agents:
            self.stats.agent(agent.name)
        return found.planned

    def _resume_context(self, recorded, source: Path) -> None:
        """A resumed run goes on in the context mode it ran in."""
        try:
            mode = ContextMode.parse(recorded or "memory")
        except ConfigError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        if self._context_given is not None and self._context_given != mode:
            raise CheckpointError(f"{source}: the run used context {mode}; resume it with --context {mode}, "
                                  "or start a new run")
        self.context = mode

    def save_checkpoint(self, max_rounds: int) -> Path:
        """Write the checkpoint of the last completed round."""
        try:
            counts = self.memory.counts()
        except Exception as exc:  # a locked or broken index must not cost the checkpoint
            if self.progress:
                self.progress.warning("memory counts left out of the checkpoint: %s", exc)
            counts = {}
        checkpoint = Checkpoint(self.topic.name, self.topic.title, max_rounds, self.state, counts,
                                context=str(self.context))
        path = checkpoint.save(self.checkpoint_path)
        if self.journal:
            self.journal.write("checkpoint", round=self.last_round, path=str(path))
        return path

    def _finish(self, reason: str, last: int) -> None:
        self.stop_reason = reason if reason != "stopped" else self.stop.reason
        try:
            path = self.save_checkpoint(last)
            if reason == "stopped":
                self.stop.consume_stop_file()
                self.journal.write("stop", round=self.last_round, reason=self.stop.reason)
                self.progress.info("stopped after round %d (%s)", self.last_round, self.stop.reason)
            self.journal.write("run_end", round=self.last_round, reason=reason, stats=self.stats.to_dict())
            self.progress.info("checkpoint: %s", path)
            self.progress.info(self.summary())
        except StorageError as exc:
            self.progress.warning("%s", exc)
            if reason not in ("error", "interrupted"):  # else the error that ended the run is the one to tell
                raise
        finally:
            self.memory.close()  # the index reopens itself if the orchestrator runs again
            self.progress.close()
            self._lock.release()

    def summary(self) -> str:
        return self.state.summary()


def _team_memory(agents: list[Agent], agents_dir: Path) -> TeamMemory:
    try:
        return TeamMemory({a.name: Path(a.root) if a.root else agents_dir / a.name for a in agents})
    except OSError as exc:
        raise ConfigError(f"agent folder {exc.filename}: {exc.strerror}") from None
