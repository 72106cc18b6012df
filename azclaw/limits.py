"""The limits a run may be given, read once: durations (``90s``, ``30m``,
``8h``, ``1h30m``), a clock time (``07:00``), prices per million tokens
(``3,15``), what to do with an agent going in circles. ``check(options)``
turns a ``RunOptions``' raw values into these, naming the option of any
problem; the watchers then use them (``budgets.py``, ``watchers.py``).
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timedelta

from .errors import ConfigError

LOOP_ACTIONS = ("skip", "stop")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")


def duration(value, name: str = "max_time") -> float:
    """Seconds of ``value``: a number of seconds, or text such as 90s, 30m,
    8h, 1h30m, 2d (0: no limit)."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration such as 90s, 30m, 8h or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            text += "s"
        found = _DURATION.fullmatch(text) if text else None
        if not found or not any(found.groups()):
            raise ConfigError(f"{name}: expected a duration such as 90s, 30m, 8h or 1h30m, got {value!r}")
        days, hours, minutes, secs = (float(g) if g else 0.0 for g in found.groups())
        seconds = days * 86400 + hours * 3600 + minutes * 60 + secs
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"{name}: expected a duration >= 0, got {value!r}")
    return seconds


def clock(value, name: str = "until") -> str:
    """``value`` as HH:MM or HH:MM:SS (a local time of day)."""
    text = str(value).strip() if isinstance(value, str) else ""
    found = _CLOCK.fullmatch(text)
    if not found:
        raise ConfigError(f"{name}: expected a local time of day as HH:MM (07:00, 23:30), got {value!r}")
    hour, minute, second = (int(g) if g else 0 for g in found.groups())
    return f"{hour:02d}:{minute:02d}" + (f":{second:02d}" if found.group(3) else "")


def next_time(value: str, now: datetime | None = None) -> datetime:
    """The next moment the clock shows ``value`` (HH:MM[:SS], local time):
    today, or tomorrow when that has passed."""
    now = now or datetime.now()
    parts = [int(p) for p in value.split(":")] + [0]
    moment = now.replace(hour=parts[0], minute=parts[1], second=parts[2], microsecond=0)
    return moment if moment > now else moment + timedelta(days=1)


def price(value, name: str = "price") -> tuple[float, float] | None:
    """USD per million prompt and completion tokens: "IN,OUT" (or one number
    for both), or a pair of numbers."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        items = [p.strip().lstrip("$") for p in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    try:
        numbers = [float(p) for p in items if not isinstance(p, bool)]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != len(items) or len(numbers) not in (1, 2) or any(n < 0 or n != n for n in numbers):
        raise ConfigError(f"{name}: expected IN,OUT: US dollars per million prompt and completion tokens "
                          f"(e.g. 3,15), got {value!r}")
    return (numbers[0], numbers[-1])


def money(value, name: str = "budget_money") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ConfigError(f"{name}: expected an amount of US dollars >= 0, got {value!r}")
    return float(value)


def command(value, name: str) -> tuple[str, ...]:
    """A command line (text, split as a shell would, or a list of words)."""
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc} in {value!r}") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(w, str) for w in value):
        words = list(value)
    else:
        raise ConfigError(f"{name}: expected a command line, got {value!r}")
    if not words:
        raise ConfigError(f"{name}: the command is empty")
    return tuple(words)


def check(options) -> None:
    """Read the limits of a ``RunOptions`` (frozen: set through
    ``object.__setattr__``); every problem names the option."""
    def put(field: str, value) -> None:
        object.__setattr__(options, field, value)

    put("max_time", duration(options.max_time))
    if options.until is not None:
        put("until", clock(options.until))
    put("price", price(options.price))
    put("budget_money", money(options.budget_money))
    if options.budget_money and options.price is None:
        raise ConfigError("budget_money: a money budget needs the prices: give price IN,OUT "
                          "(US dollars per million prompt and completion tokens)")
    if options.on_loop not in LOOP_ACTIONS:
        raise ConfigError(f"on_loop: expected one of {', '.join(LOOP_ACTIONS)}, got {options.on_loop!r}")
    if options.done_agent is not None and (not isinstance(options.done_agent, str) or not options.done_agent.strip()):
        raise ConfigError(f"done_agent: expected an agent's name, got {options.done_agent!r}")
    if options.finish_check is not None:
        command(options.finish_check, "finish_check")


def short(seconds: float) -> str:
    """1h30m, 2m05s, 45s."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
