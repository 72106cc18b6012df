"""The ``azclaw`` command: a thin layer over the library.

Only this folder reads argv, prints usage errors and chooses exit codes:
``parser.py`` declares the options (those that several commands share
once, ``add_*_options``), ``config.py`` turns them into values once
(``TeamConfig``, ``run_options``; ``argparse.Namespace`` is never changed
after parsing), ``commands.py`` holds a function per command, and ``main``
here turns errors into one line and an exit code.
"""

from __future__ import annotations

import os
import sys

from ..errors import AzclawError
from ..safetext import one_line
from .config import PACKAGE_TOPICS, TeamConfig
from .parser import make_parser

__all__ = ["PACKAGE_TOPICS", "TeamConfig", "main", "make_parser"]


def _output_closed() -> bool:
    """Has the program reading our standard output gone away?"""
    import select
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno, or no poll() on this system
        return True


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not in a traceback at exit
        return code
    except BrokenPipeError:
        if not _output_closed():
            raise  # another pipe (a tool's, a server's) broke: not the reader going away
        # azclaw status | head -1: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except AzclawError as exc:
        print(f"azclaw: error: {one_line(exc)}", file=sys.stderr)  # it can carry a server's words
        return 1
    except KeyboardInterrupt:
        print("azclaw: interrupted; the last completed round is checkpointed", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
