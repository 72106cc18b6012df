"""One sanitiser for text that a model or a server wrote, before it reaches
a terminal or a log: the console, ``logs/<topic>.log``, ``azclaw show``,
``status``, ``doctor``, error lines, the ``--approve`` question.

What a terminal would act on instead of showing is written out as an
escape a person can read (``\\x1b``, ``\\u202e``): C0 and C1 control
characters (ESC, CSI, BEL, carriage return, backspace...), the format
characters that hide or reorder text (bidi overrides and isolates,
zero-width spaces, tag characters), line and paragraph separators and lone
surrogates. Newlines (and tabs) stay where several lines are wanted;
``one_line`` writes them out too. A line a model wrote can still look like
one of azclaw's own, so text that spans lines is indented when it follows
azclaw's own words (``continued``) or stands as a block (``indented``).

Standard library only.
"""

from __future__ import annotations

import re

__all__ = ["indented", "one_line", "printable", "continued"]

# C0 but tab and newline, DEL, C1; the Unicode format characters (category
# Cf) but the zero-width (non-)joiners that some scripts and emoji need;
# line and paragraph separators; surrogates (only lone ones reach a str).
_FORMAT = ("\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f\u2028-\u202e"
           "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f"
           "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f")
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_FORMAT}]")
_UNSAFE_LINE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_FORMAT}]")  # the same, and newline


def _escape(found: re.Match) -> str:
    code = ord(found.group())
    if code == 0x0A:
        return "\\n"
    if code == 0x0D:
        return "\\r"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, keep_newlines: bool = True) -> str:
    """``text`` with everything a terminal would act on written out as an
    escape; newlines and tabs kept (``keep_newlines``) or written out as
    ``\\n`` and a space (one line)."""
    text = (text if isinstance(text, str) else str(text)).replace("\r\n", "\n")  # a line end, not a return
    if keep_newlines:
        return _UNSAFE.sub(_escape, text)
    return _UNSAFE_LINE.sub(_escape, text).replace("\t", " ")


def one_line(text: object, limit: int | None = None) -> str:
    """``printable`` on one line, cut to ``limit`` characters (with "...")."""
    line = printable(text, keep_newlines=False)
    return line if limit is None or len(line) <= limit else line[:max(0, limit - 3)] + "..."


def continued(text: object, indent: str = "  ") -> str:
    """Printable text whose first line goes on after azclaw's own words and
    whose later lines are indented, so none of them can pass for a line
    azclaw wrote (``[round 9/9] ...``, a log line's time stamp)."""
    return printable(text).replace("\n", "\n" + indent)


def indented(text: object, indent: str = "  ") -> str:
    """Printable text as a block, every line indented."""
    return indent + continued(text, indent)
