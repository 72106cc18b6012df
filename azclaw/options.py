"""A run's options, as one frozen value, and the folder it keeps its files in.

``RunOptions`` holds how a run goes (context mode, budgets, limits, tool
steps, sandbox, approval, how requests find their servers); it is checked once, when it is made, and every
problem names the option. The CLI builds its flags, defaults and help from
these fields (``cli_option``), so a default is written in one place.

``RunFolder`` is the one place that knows a run's file names: the
checkpoint, journal, lock, log and report of a topic, the local server's
log, an MCP server's log, and the folders of a bench's modes.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from .client.endpoint import HEADER_NAME
from .client.pool import ROUTING_HEADER
from .context import ContextMode
from .errors import ConfigError
from .limits import check as check_limits
from .tools.sandbox import python_mode

JOURNAL_SUFFIX = "_journal.jsonl"


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, metavar: str | None = None,
           group: str = "run", least: int | float | None = None, cli: bool = True, factory: Any = MISSING,
           kind: type | None = None):
    """A field of an options value, with what the command line says of it
    (``kind``: the command line's type where the default does not tell)."""
    meta = {"help": help, "flag": flag, "metavar": metavar, "group": group, "least": least, "cli": cli,
            "kind": kind}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunOptions:
    """How a run goes. Every field has a default; ``RunOptions(parallel=True)``."""

    context: ContextMode | None = option(None, "what of the conversation each request carries: memory (the "
                                  "previous round; the default, or a resumed run's own mode), full (everything so "
                                  "far, cut at --context-budget) or window:N (the last N rounds)",
                                  metavar="MODE", group="context", kind=str)
    context_budget: int = option(12000, "tokens one request may carry; older tool results of the turn, then the "
                                 "longest messages, are cut to fit", metavar="TOKENS", group="context", least=1)
    message_chars: int = option(4000, "characters of each agent's message sent on to the next round; a longer "
                                "one is cut with a pointer to the journal", metavar="CHARS", group="context",
                                least=1)
    max_tool_steps: int = option(8, "tool steps an agent may take in one turn", metavar="N",
                                 group="sandbox and tools", least=0)
    checkpoint_every: int = option(5, "write the checkpoint every N rounds, and whenever the run ends",
                                   metavar="N", least=1)
    max_failed_rounds: int = option(3, "stop after this many rounds in a row in which every turn failed",
                                    metavar="N", least=1)
    stop_on_silent_agent: int = option(0, "stop the run when one agent gave only empty replies for N rounds in a "
                                       "row (0: report it and go on)", metavar="N", least=0)
    parallel: bool = option(False, "run the agents of a round at the same time")
    allow_secret_sources: bool = option(False, "accept a source folder that is /, holds your home folder or a "
                                        "folder of keys (.ssh, .aws ...); their secret files stay hidden from "
                                        "agents and their code", group="sandbox and tools")
    max_concurrency: int = option(0, "with --parallel, at most N turns at once (0: the whole round)", metavar="N",
                                  least=0)
    python: str = option("sandboxed", "how run_python runs model-written code: sandboxed (Landlock, seccomp, "
                         "namespaces; off where no sandbox works), bwrap (the same inside bubblewrap), "
                         "unsandboxed (as you, with your files and network), off", cli=False)
    approve: Callable[[str, str], bool] | None = option(None, "asks before every tool that changes something: "
                                                        "approve(tool, preview) -> bool", cli=False)
    check_health: bool = option(True, "check every endpoint (and its model) before round 1", cli=False)
    git: bool = option(False, "commit each round that changed the output folder to git, authored by the agents "
                       "that wrote: the repository is <log-dir>/<topic>.git, out of the agents' reach, and the "
                       "output folder's .git file points to it once the run ends (git log -p is the review)",
                       group="sandbox and tools")
    # limits: budgets end the run (reason budget), the watchers warn, nudge and stop (watchers.py, budgets.py)
    budget_tokens: int = option(0, "end the run once the team's tokens (prompt + completion, as the servers "
                                "counted them, over all sessions of the run) reach N; checked between turns "
                                "(default 0: none)", metavar="N", group="limits", least=0)
    max_time: float | str = option(0.0, "end the run once it has run this long over all its sessions: 90s, 30m, "
                                   "8h, 1h30m (default: no limit)", metavar="DURATION", group="limits", kind=str)
    until: str | None = option(None, "end the run at this local time of day, HH:MM (tomorrow when it has "
                               "passed)", metavar="HH:MM", group="limits")
    price: tuple | str | None = option(None, "US dollars per million prompt and completion tokens, e.g. 3,15: "
                                       "the summary says what the run cost", metavar="IN,OUT", group="limits")
    budget_money: float = option(0.0, "end the run once its tokens cost this many US dollars at --price "
                                 "(default 0: none)", metavar="USD", group="limits")
    no_tool_turns: int = option(3, "warn when an agent called no tool for N turns in a row while tools were "
                                "offered (0: never)", metavar="N", group="limits", least=0)
    loop_turns: int = option(3, "an agent that repeats itself for N turns in a row (the same tool call with the "
                             "same result, a message nearly the same as one of its last few, memory titles "
                             "that are timestamps or repeats) is warned and nudged (0: never)", metavar="N",
                             group="limits", least=0)
    loop_limit: int = option(0, "after the nudge, N more such turns in a row and the agent is skipped for "
                             "3 rounds or the run stops, as --on-loop says (0: warn and nudge only)",
                             metavar="N", group="limits", least=0)
    on_loop: str = option("skip", "what --loop-limit does: skip (the agent sits out 3 rounds) or stop (the "
                          "run ends, reason loop)", metavar="skip|stop", group="limits")
    no_progress_rounds: int = option(5, "warn when N rounds in a row created or changed no file and stored no "
                                     "new memory (0: never)", metavar="N", group="limits", least=0)
    stop_on_no_progress: int = option(0, "end the run (reason no_progress) after N rounds in a row without "
                                      "progress (default 0: warn and go on)", metavar="N", group="limits",
                                      least=0)
    done_agent: str | None = option(None, "this agent is offered a done(reason) tool that ends the run "
                                    "(reason done) at the end of its round; the topic's finish.agent",
                                    metavar="NAME", group="finish line")
    finish_check: str | None = option(None, "a command run in the output folder under run_python's sandbox: "
                                      "after every round that changed the folder, or to confirm a done call "
                                      "when there is a done agent; it succeeding ends the run (reason done); "
                                      "the topic's finish.check", metavar="COMMAND", group="finish line")
    per_server: int = option(0, "requests at once per server of --endpoints where the server does not tell its "
                             "slots (llama.cpp does, in /props); 0: no limit", metavar="N",
                             group="team and endpoints", least=0)
    routing_header: str = option(ROUTING_HEADER, "the header that carries each request's routing key "
                                 "(azclaw-<run>-<agent>), so a router keeps an agent on one worker",
                                 metavar="NAME", group="team and endpoints")
    routing_key: bool = option(True, "send the routing key (--no-routing-key: do not)", cli=False)

    def __post_init__(self):
        if self.context is not None:  # None: memory, or a resumed run's own mode
            object.__setattr__(self, "context", ContextMode.parse(self.context))
        object.__setattr__(self, "python", python_mode(self.python))
        for f in fields(self):
            least = f.metadata.get("least")
            value = getattr(self, f.name)
            if least is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"{f.name}: expected a whole number >= {least}, got {value!r}")
        if not isinstance(self.routing_header, str) or not HEADER_NAME.fullmatch(self.routing_header):
            raise ConfigError(f"routing_header: {self.routing_header!r} is not a header name")
        check_limits(self)
        if self.approve is not None and not callable(self.approve):
            raise ConfigError(f"approve: expected a function approve(tool, preview) -> bool, got {self.approve!r}")

    @classmethod
    def of(cls, values: dict) -> "RunOptions":
        """Options from keywords, an unknown one named with the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{unknown[0]}: not an option of a run; options: {', '.join(sorted(names))}")
        return cls(**values)

    def with_(self, **changes) -> "RunOptions":
        return replace(self, **changes)


@dataclass(frozen=True)
class RunFolder:
    """Where a run keeps things: ``output`` (what the team writes), ``logs``
    (checkpoint, journal, log, report), ``agents`` (the AgentAZAll roots),
    and the ``stop_file`` that ends it."""

    output: Path = option(Path("output"), "folder the writer writes into", flag="--output", metavar="DIR",
                          group="folders")
    logs: Path = option(Path("logs"), "checkpoints, journal and log", flag="--log-dir", metavar="DIR",
                        group="folders")
    agents: Path = option(Path("agents"), "AgentAZAll roots of the agents (their memories)", flag="--agents-dir",
                          metavar="DIR", group="folders")
    stop_file: Path = option(Path("STOP"), "the file whose appearance ends the run after its round", cli=False)

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, Path(getattr(self, f.name)))

    @classmethod
    def under(cls, root: str | Path) -> "RunFolder":
        """The folders of a run kept together under ``root`` (a bench mode,
        ``azclaw mcp --dir``)."""
        root = Path(root)
        return cls(root / "output", root / "logs", root / "agents", root / "STOP")

    # -- a topic's files in the log folder ------------------------------------
    def checkpoint(self, topic: str) -> Path:
        return self.logs / f"{topic}_checkpoint.json"

    def journal(self, topic: str) -> Path:
        return self.logs / f"{topic}{JOURNAL_SUFFIX}"

    def lock(self, topic: str) -> Path:
        return self.logs / f"{topic}.lock"

    def log(self, topic: str) -> Path:
        return self.logs / f"{topic}.log"

    def report(self, topic: str) -> Path:
        return self.logs / f"{topic}_report.html"

    def git(self, topic: str) -> Path:
        """The git repository of ``--git``: beside the journal, where model code cannot reach it."""
        return self.logs / f"{topic}.git"

    @property
    def local_server_log(self) -> Path:
        return self.logs / "local_server.log"

    def mcp_log(self, server: str) -> Path:
        return self.logs / f"mcp_{server}.log"

    def own_files(self, topic: str) -> list[str]:
        """The names of the files a run writes by replacing them (their
        leftover temporary files are swept at start)."""
        return [self.checkpoint(topic).name, self.journal(topic).name]


def journal_topic(path: Path) -> str:
    """The topic name of a journal file (``todo_api_journal.jsonl`` -> ``todo_api``)."""
    name = Path(path).name
    return name[: -len(JOURNAL_SUFFIX)] if name.endswith(JOURNAL_SUFFIX) else Path(path).stem


def cli_option(cls, name: str) -> dict:
    """What ``argparse.add_argument`` takes for field ``name`` of ``cls``:
    the flag, the default, the help (with the default said) and the type."""
    f = next(f for f in fields(cls) if f.name == name)
    meta = f.metadata
    default = f.default if f.default is not MISSING else f.default_factory()
    flag = meta.get("flag") or "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": flag[2:].replace("-", "_"), "help": meta.get("help", "")}
    if isinstance(default, bool):
        kwargs.update(action="store_true", default=False)
    else:
        kwargs.update(default=None, metavar=meta.get("metavar"))
        kwargs["type"] = meta.get("kind") or (type(default) if isinstance(default, (int, float)) else str)
        if default is not None and "(default" not in kwargs["help"]:
            kwargs["help"] += f" (default {default})"
    return {"flag": flag, **kwargs}


def given(cls, args) -> dict:
    """The fields of ``cls`` that the command line set (argparse ``args``)."""
    out = {}
    for f in fields(cls):
        if not f.metadata.get("cli", True):
            continue
        value = getattr(args, (f.metadata.get("flag") or "--" + f.name)[2:].replace("-", "_"), None)
        if value is not None and value is not False:
            out[f.name] = value
    return out


def groups(cls) -> dict[str, list[str]]:
    """The command-line fields of ``cls`` by group, in declaration order."""
    out: dict[str, list[str]] = {}
    for f in fields(cls):
        if f.metadata.get("cli", True):
            out.setdefault(f.metadata.get("group", "run"), []).append(f.name)
    return out
