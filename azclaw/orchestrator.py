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

The loop emits events (``events.py``) and does nothing else with them: the
journal, the run state, the console and the watchers are subscribers. What
a subscriber returns (``Stop``, ``Nudge``, ``Skip``) is done between turns.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from dataclasses import fields, replace
from pathlib import Path

from .agent import Agent
from .checkpoint import Checkpoint
from .console import RunConsole
from .context import ContextMode
from .errors import CheckpointError, ConfigError, RunAborted, StorageError
from .events import (CheckpointWritten, Ending, Event, Notice, Nudge, Observer, Observers, ProbeAnswered,
                     ReplyProgress, RoundFailed, RoundFinished, RunFinished, RunStarted, RunWarning, Skip, Stop,
                     ToolModeChanged, TurnFinished, TurnStarted)
from .files import RunLock, sweep_temporary
from .finish import FinishLine
from .gitlog import GitLog
from .memory import TeamMemory
from .options import RunFolder, RunOptions
from .outcome import Outcome
from .parallel import in_threads
from .prompt import CHARS_PER_TOKEN, first_focus, system_prompt
from .resume import take_up
from .runlog.journal import Journal
from .session import AgentSession, ClientFactory, start_sessions, stop_sessions
from .state import HISTORY_KEEP, RunState
from .stats import RunStats
from .stopping import StopControl
from .toolmodes import instructions
from .tools import build_default_registry, sandbox
from .tools.registry import ToolContext, ToolRegistry
from .topic import Probe, Topic
from .turn import Turn, take_turn
from .watchers import default_watchers

DEFAULT_ROUNDS = 10
_OLD_OPTIONS = {"run_python": "python", "message_budget": "message_chars"}  # keywords of azclaw 0.3


class Orchestrator:
    """Runs a team of agents on a task, round after round.

    ``source_dirs`` are the folders agents may read (the output folder is
    always readable); only writers write, and only into ``output_dir``. A
    source folder that is /, holds a home folder or a folder of keys is
    refused unless ``allow_secret_sources``. Memories live in each agent's
    AgentAZAll root under ``agents_dir``, or in the ``memory`` given. ``options`` (a ``RunOptions``), or any of its
    fields as keywords (``parallel=True``), say how the run goes;
    ``observers`` are called with every event; ``client_factory(agent,
    outages)`` makes each agent's LLM client.
    """

    def __init__(self, agents: list[Agent], topic: Topic | None = None, output_dir="./output", log_dir="./logs",
                 source_dirs=None, registry: ToolRegistry | None = None, agents_dir="./agents", *,
                 memory: TeamMemory | None = None, options: RunOptions | None = None,
                 observers: list[Observer] = (), client_factory: ClientFactory | None = None,
                 verbose: bool = True, **option_values):
        names = [a.name for a in agents]
        if not agents:
            raise ConfigError("agents: a team needs at least one agent")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"agents: name {duplicated[0]!r} is used twice")
        stop_file = option_values.pop("stop_file", "STOP")
        self.options = _options(options, option_values)
        self.agents = list(agents)
        self.topic = topic or Topic(title="task")
        self.task = ""
        self.folder = RunFolder(output_dir, log_dir, agents_dir, stop_file)
        self.source_dirs = [Path(d) for d in (self.topic.source_dirs if source_dirs is None else source_dirs)]
        for folder in self.source_dirs:
            if not folder.is_dir():
                raise ConfigError(f"source folder {folder}: not found")
        sandbox.check_source_folders(self.source_dirs, self.options.allow_secret_sources)
        self.registry = registry or build_default_registry()
        self.observers = list(observers)
        self.client_factory = client_factory
        self.verbose = verbose
        sandbox.check_output_folder(self.folder.output, self.folder.agents, self.folder.logs)
        self.stop = StopControl(self.folder.stop_file)
        self.memory = memory if memory is not None else _team_memory(self.agents, self.folder.agents)
        missing = [n for n in names if n not in self.memory.roots]
        if missing:
            raise ConfigError(f"memory: no AgentAZAll root for agent {missing[0]!r}")
        self.state = self._fresh_state()
        self.ending: Ending | None = None
        self.sessions: dict[str, AgentSession] = {}
        self.journal: Journal | None = None
        self.command: list[str] | None = None  # the azclaw arguments that started the run: the summary's "to go on"
        self.finish_line: FinishLine | None = None
        self._outcome = Outcome()
        self._watchers: list = []
        self._git: list = []
        self._events = Observers()
        self._kept: dict[str, Turn] = {}  # finished turns of the round a resume takes up

    # -- what the run has done (the state the checkpoint holds) --------------
    stats = property(lambda self: self.state.stats)
    history = property(lambda self: self.state.history)
    probe_answers = property(lambda self: self.state.probe_answers)
    last_round = property(lambda self: self.state.round)
    context = property(lambda self: self.options.context or ContextMode())
    output_dir = property(lambda self: self.folder.output)
    log_dir = property(lambda self: self.folder.logs)
    agents_dir = property(lambda self: self.folder.agents)
    checkpoint_path = property(lambda self: self.folder.checkpoint(self.topic.name))
    journal_path = property(lambda self: self.folder.journal(self.topic.name))

    @property
    def stop_reason(self) -> str:
        """Why the last run ended ("" before one): ``self.ending.reason``."""
        return self.ending.reason if self.ending else ""

    def _fresh_state(self) -> RunState:
        state = RunState(keep=self.context.history_keep(len(self.agents), HISTORY_KEEP))
        for agent in self.agents:
            state.stats.agent(agent.name)
        return state

    def set_task(self, text: str, name: str | None = None) -> None:
        """The task; it opens round 1 when the topic has no initial prompt.
        Without a topic, the run is named from the task (or ``name``)."""
        self.task = text
        if self.topic.name == "task" and self.topic.title == "task":
            self.topic = Topic.from_task(text, name)

    # -- the run ------------------------------------------------------------
    def run(self, max_rounds: int | None = None, resume=None) -> RunStats:
        """Run until round ``max_rounds`` (default: the resumed run's own last
        round, else the topic's last phase, else 10), a STOP file, a signal,
        or an observer's ``Stop``. ``resume`` is a checkpoint path, or True:
        this topic's checkpoint and the turns its journal shows finished after it."""
        last = self._start(max_rounds, resume)
        round_no, failed, started = self.last_round + 1, 0, time.monotonic()
        try:
            while self.ending is None and round_no <= last:
                turns = self._run_round(round_no, last)
                if self.ending is not None:  # an observer stopped the run between turns
                    break
                if turns and all(t.failed for t in turns):  # nothing came back: the round runs again
                    failed += 1
                    self._emit(RoundFailed(round_no, failed, turns[-1].errors[-1]))
                    if failed >= self.options.max_failed_rounds:
                        self.ending = Ending("failed_rounds", f"{failed} rounds in which every turn failed "
                                             f"(round {round_no}); last error: {turns[-1].errors[-1]}")
                else:
                    failed = 0
                    self._ask_probes(round_no, last)
                    with self.stop.deferred():  # a round is folded in whole, or not at all
                        self._emit(RoundFinished(round_no, tuple(turns)))
                    if round_no % self.options.checkpoint_every == 0 and round_no < last:
                        self.save_checkpoint(last)
                    round_no += 1
                self.ending = self.ending or self.stop.ending()
            self.ending = self.ending or Ending("max_rounds", f"round {last} of {last}")
        except KeyboardInterrupt as exc:
            self.ending = Ending("signal", str(exc) or "interrupted")
            raise
        except BaseException as exc:  # the journal must not call a crashed run finished
            self.ending = Ending("error", f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            self._finish(last, time.monotonic() - started)
        if self.ending.reason == "failed_rounds":
            raise RunAborted(f"stopped after {self.ending.detail}; checkpoint: {self.checkpoint_path}")
        return self.stats

    def _emit(self, event: Event, depth: int = 0) -> None:
        """Tell every observer; do what they ask (between turns)."""
        for action in self._events.emit(event):
            if isinstance(action, Event) and depth < 3:  # an observer has something to say
                self._emit(action, depth + 1)
            elif isinstance(action, Stop) and self.ending is None:
                self.ending = action.ending
            elif isinstance(action, Nudge) and action.agent in self.sessions:
                self.sessions[action.agent].nudges.append(action.text)
            elif isinstance(action, Skip) and action.agent in self.sessions:
                self.sessions[action.agent].skip_rounds = max(self.sessions[action.agent].skip_rounds, action.rounds)

    def _run_round(self, round_no: int, last: int) -> list[Turn]:
        kept, self._kept = self._kept, {}
        jobs = []
        for agent in self.agents:
            session = self.sessions[agent.name]
            if agent.name in kept:
                continue
            if session.skip_rounds > 0:
                session.skip_rounds -= 1
                self._emit(RunWarning(f"{agent.name} sits out round {round_no}", round_no, agent.name, "skip"))
                continue
            jobs.append(lambda s=session: self._turn(s, round_no, last))
        if self.options.parallel and len(jobs) > 1:
            turns = [t for t in in_threads(jobs, self.options.max_concurrency, lambda: self.ending is not None) if t]
        else:
            turns = []
            for job in jobs:
                if self.ending is not None:
                    break
                turns.append(job())
        return [t for a in self.agents for t in [kept.get(a.name)] if t] + turns

    def _turn(self, session: AgentSession, round_no: int, last: int) -> Turn:
        agent = session.agent
        tools = self.registry.allowed(agent.can_write, agent.tools)
        tools += self.finish_line.tools(agent.name) if self.finish_line else []
        self._emit(TurnStarted(round_no, agent.name, tuple(t.name for t in tools)))
        conversation = self._conversation(session, round_no, last, tools)
        nudge = session.take_nudges()
        user = conversation.text + (f"\n\nNote from the run: {nudge}" if nudge else "")
        turn = self._take_turn(session, round_no, last, user, tools)
        turn.dropped = conversation.dropped
        if turn.switched:
            self._emit(ToolModeChanged(round_no, agent.name, session.tool_mode, turn.switched))
        self._emit(TurnFinished(turn))
        return turn

    def _conversation(self, session: AgentSession, round_no: int, last: int, tools, closing: str | None = None):
        """What of the team's conversation the agent is sent (the context mode)."""
        room = 0
        if self.context.kind != "memory":  # the budget's room once the system prompt is in
            room = session.context_budget * CHARS_PER_TOKEN - len(self._system(session, tools, round_no, last))
        history = self.state.history if closing is None else self.state.messages(round_no)
        return self.context.conversation(round_no if closing is None else round_no + 1, history,
                                         self.topic.initial_prompt or self.task, room, self.options.message_chars,
                                         str(self.journal_path), closing, first_focus(self.topic.phase_for(1)))

    def _system(self, session: AgentSession, tools, round_no: int, last: int) -> str:
        how = instructions(session.tool_mode, tools, session.agent.max_tokens)
        return system_prompt(session.agent, self.topic, self.task, self.agents, tools, round_no, last, how,
                             self.context)

    def _take_turn(self, session: AgentSession, round_no: int, last: int, user: str, tools,
                   probe: bool = False) -> Turn:
        agent = session.agent
        ctx = ToolContext(agent=agent.name, can_write=agent.can_write, output_dir=self.output_dir,
                          source_dirs=self.source_dirs, memory=self.memory, round=round_no,
                          run_python_enabled=self.options.python, approve=self.options.approve)
        phase = self.topic.phase_for(round_no)

        def streaming(progress) -> None:
            self._events.emit(ReplyProgress(round_no, agent.name, progress))
        return take_turn(session, self._system(session, tools, round_no, last), user, tools, self.registry, ctx,
                         phase=phase.name if phase else None, probe=probe, max_steps=self.options.max_tool_steps,
                         on_delta=streaming)

    def _ask_probes(self, round_no: int, last: int) -> None:
        """Ask every agent each probe due after ``round_no``; only recall is offered."""
        answered = {(p.turn.agent, p.question) for p in self.state.pending_probes if p.turn.round == round_no}
        for probe in self.topic.probes_after(round_no):
            for agent in self.agents:
                if (agent.name, probe.question) not in answered:
                    self._ask_probe(self.sessions[agent.name], probe, round_no, last)

    def _ask_probe(self, session: AgentSession, probe: Probe, round_no: int, last: int) -> None:
        question = (f"Coherence check after round {round_no}: {probe.question}\n"
                    "Answer from what you know; use recall to look it up. Answer in a few sentences.")
        agent = session.agent
        tools = [t for t in self.registry.allowed(agent.can_write, agent.tools) if t.name == "recall"]
        conversation = self._conversation(session, round_no, last, tools, closing=question)
        turn = self._take_turn(session, round_no, last, conversation.text, tools, probe=True)
        turn.dropped = conversation.dropped
        correct = None if turn.failed else probe.score(turn.text)
        self._emit(ProbeAnswered(turn, probe.question, tuple(probe.expect or ()), correct))

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
        self.ending = None
        self.finish_line = FinishLine.of(self.topic, self.options, self.agents, self.registry, self.output_dir,
                                         self.source_dirs)
        self._lock = RunLock(self.folder.lock(self.topic.name), f"topic {self.topic.name!r}").acquire()
        try:
            git = [GitLog.open(self.folder, self.topic.name)] if self.options.git else []
            planned = self._restore(resume) if resume else None
            routing = self.options.routing_header if self.options.routing_key else None
            self.sessions = start_sessions(self.agents, self.options.context_budget, self.client_factory,
                                           run=self.topic.name, per_server=self.options.per_server,
                                           routing_header=routing)
            if self.options.check_health:
                for session in self.sessions.values():
                    session.client.health_check()
                    session.client.check_model()
                    session.fit_to_server()
            last = max_rounds or planned or self.topic.last_round or DEFAULT_ROUNDS
            sweep_temporary(self.log_dir, self.folder.own_files(self.topic.name))
            console = RunConsole(self.folder.log(self.topic.name), console=self.verbose)
        except BaseException:
            self._lock.release()
            raise
        try:
            # a resume takes up the turns that had finished: later lines (a version-2 journal) leave the journal
            self.journal = Journal.open(self.journal_path, resumed_from=self.last_round if resume else None)
        except BaseException:
            console.close()
            self._lock.release()
            raise
        self._outcome = Outcome()
        # git first: a round committed but not yet journaled is found unchanged when a resume ends it again
        self._git = git
        trusted = [*git, self.journal, self.state.apply, self._archive_round, console, self._outcome]
        self._watchers = default_watchers(self.options, self.agents) + ([self.finish_line] if self.finish_line else [])
        self._events = Observers(trusted + self._watchers, self.observers)
        self._console = console
        if self.stop.clear_stale():
            self._emit(Notice(f"removed a STOP file left from an earlier run: {self.stop.stop_file}"))
        self.stop.install(announce=self._announce_stop)
        sandbox.protect_process()  # same-user processes (model-written code) cannot read our memory or environ
        python_sandbox = (sandbox.sandbox_summary(self.options.python) if any(a.can_write for a in self.agents)
                          else "run_python not offered (no writer)")
        self._emit(RunStarted(
            topic=self.topic.name, title=self.topic.title, first_round=self.last_round + 1, last_round=last,
            agents=tuple(a.name for a in self.agents), context=str(self.context),
            context_budget=self.options.context_budget, resumed_from=self.last_round if resume else None,
            pid=os.getpid(), host=socket.gethostname(), sandbox=python_sandbox, phases=tuple(self.topic.phases),
            probes=tuple({"after_round": p.after_round, "question": p.question, "expect": p.expect}
                         for p in self.topic.coherence_probes), stats=self._totals()))
        missing = self.topic.missing_sources(self.source_dirs)
        if missing:
            self._emit(RunWarning("the topic's phases name source files that no source folder holds: "
                                  f"{', '.join(missing)} (give their folder with --source)", what="sources"))
        return last

    def _archive_round(self, event: Event):
        """The rounds are searchable too: each finished round's messages go
        into the team memory (``recall`` finds them after the memories)."""
        if not isinstance(event, RoundFinished):
            return None
        problems: list[str] = []
        self.memory.archive_round(event.round, [(t.agent, t.text) for t in event.turns if t.text],
                                  on_error=problems.append)
        return [RunWarning(problem, event.round, what="memory") for problem in problems]

    def _announce_stop(self, why: str) -> None:
        self._events.emit(Notice(f"{why}: stopping after round {self.last_round + 1} finishes; press Ctrl+C "
                                 "again to stop now", "warning"))
        for session in self.sessions.values():  # a wait for a server that is down ends now
            session.cancel.set()

    def _restore(self, resume) -> int | None:
        """Take up an interrupted run's state; return the last round it planned."""
        found = take_up(resume, self.checkpoint_path, self.journal_path, self.topic.name, self.topic.title)
        self._resume_context(found.context, found.source)
        found.state.keep = self.context.history_keep(len(self.agents), HISTORY_KEEP)
        self.state = found.state
        for agent in self.agents:
            self.stats.agent(agent.name)
        self._kept = {name: turn for name, turn in self.state.take_up(self.last_round + 1).items()
                      if name in {a.name for a in self.agents}}
        return found.planned

    def _resume_context(self, recorded, source: Path) -> None:
        """A resumed run goes on in the context mode it ran in."""
        try:
            mode = ContextMode.parse(recorded or "memory")
        except ConfigError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        if self.options.context is not None and self.options.context != mode:
            raise CheckpointError(f"{source}: the run used context {mode}; resume it with --context {mode}, "
                                  "or start a new run")
        self.options = replace(self.options, context=mode)

    def save_checkpoint(self, max_rounds: int) -> Path:
        """Write the checkpoint of the last completed round."""
        try:
            counts = self.memory.counts()
        except Exception as exc:  # a locked or broken index must not cost the checkpoint
            self._events.emit(Notice(f"memory counts left out of the checkpoint: {exc}", "warning"))
            counts = {}
        checkpoint = Checkpoint(self.topic.name, self.topic.title, max_rounds, self.state, counts,
                                context=str(self.context))
        path = checkpoint.save(self.checkpoint_path)
        self._emit(CheckpointWritten(self.last_round, str(path)))
        return path

    def _finish(self, last: int, elapsed: float) -> None:
        self.stop.restore()
        self.stats.elapsed += elapsed
        try:
            path = self.save_checkpoint(last)
            if self.ending.reason == "stopped":
                self.stop.consume_stop_file()
            self._emit(RunFinished(self.last_round, self.ending, self._totals(), self.summary(), str(path)))
        except StorageError as exc:
            self._events.emit(Notice(str(exc), "warning"))
            if self.ending.reason not in ("error", "signal"):  # else the error that ended the run is the one to tell
                raise
        finally:
            stop_sessions(self.sessions)
            self.memory.close()  # the index reopens itself if the orchestrator runs again
            self._console.close()
            self._lock.release()

    def _totals(self) -> RunStats:
        """The run's totals with the turns of a round it stopped in."""
        totals = copy.deepcopy(self.stats)
        for turn in self.state.pending.values():
            totals.add(turn)
        return totals

    def summary(self) -> str:
        """The end-of-run summary (``outcome.py``): why it ended, the totals,
        what was produced and not, what to look at, how to go on."""
        if self.ending is None:
            return self.state.summary()
        stats = self._totals()  # the turns of a round the run stopped in count too
        totals = RunState(self.state.round, stats, probe_answers=self.state.probe_answers).summary()
        return self._outcome.text(totals, stats, self.ending, self.last_round, agents=self.agents,
                                  output=self.output_dir, logs=self.log_dir, topic=self.topic.name,
                                  options=self.options, command=self.command, extra=self._look_at())

    def _look_at(self) -> list[str]:
        """What the run's observers point to (an observer's ``look_at()``)."""
        lines = []
        for observer in [*self._git, *self._watchers, *self.observers]:
            if not callable(getattr(observer, "look_at", None)):
                continue
            try:
                lines += [str(line) for line in observer.look_at()]
            except Exception as exc:  # a program's observer must not cost the summary
                self._events.emit(Notice(f"{observer!r}.look_at() raised {exc}", "warning"))
        return lines


def _options(options: RunOptions | None, values: dict) -> RunOptions:
    values = {_OLD_OPTIONS.get(k, k): v for k, v in values.items()}
    valid = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an option of Orchestrator; options: {', '.join(sorted(valid))}")
    try:
        return replace(options or RunOptions(), **values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def _team_memory(agents: list[Agent], agents_dir: Path) -> TeamMemory:
    try:
        return TeamMemory({a.name: Path(a.root) if a.root else agents_dir / a.name for a in agents})
    except OSError as exc:
        raise ConfigError(f"agent folder {exc.filename}: {exc.strerror}") from None
