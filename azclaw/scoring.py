"""Scoring a coherence probe's answer against its ``expect`` phrases.

An expected phrase counts when the answer holds it as whole words, in
order: "reject" matches "Rejected records..." (plain inflections of an
expected word: -s, -es, -ed, -ing), never "projection"; "postgres" does not match
"PostgreSQL" (write ``"postgres|postgresql"`` for either). Numbers match as
whole numbers: "92" is not in "9 and 2", "9" is not in "92" or "1950";
thousands separators and leading zeros do not matter ("1,250" = "1250",
"09" = "9"). An occurrence right after a negation ("not", "no", "never",
"without", "n't", "instead of", "rather than", within three words and the
same clause) does not count: "We never reject anything" does not hold
"reject". Case does not matter.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:'[^\W_]+)?|[^\s\w]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATIONS = {"not", "no", "never", "without", "nor", "neither", "cannot", "none", "nothing", "nobody", "nowhere"}
_NEGATING_PAIRS = {("instead", "of"), ("rather", "than")}
_CLAUSE_ENDS = {".", ",", ";", ":", "!", "?", "(", ")", "but", "however", "whereas", "while"}
NEGATION_REACH = 3  # words before a phrase that a negation may stand in


def score(answer: str, expect: list[str]) -> bool | None:
    """True when ``answer`` holds every expected phrase (each may list
    alternatives as ``a|b``); None when nothing is expected."""
    if not expect:
        return None
    words = tokens(answer)
    return all(any(holds(words, tokens(alt)) for alt in phrase.split("|") if alt.strip()) for phrase in expect)


def tokens(text: str) -> list[str]:
    """Lower-case words, numbers and punctuation, each normalized."""
    text = text.lower().replace("\u2019", "'")
    return [_normal(t) for t in _TOKEN.findall(text)]


def holds(words: list[str], phrase: list[str]) -> bool:
    """``phrase`` (tokens) occurs in ``words`` without a negation before it.
    Punctuation in the phrase is matched loosely: only its words count."""
    phrase = [t for t in phrase if _is_word(t)]
    if not phrase:
        return False
    positions = [i for i, t in enumerate(words) if _is_word(t)]
    for start in range(len(positions) - len(phrase) + 1):
        if all(_same(words[positions[start + k]], w) for k, w in enumerate(phrase)) \
                and not negated(words, positions[start]):
            return True
    return False


def negated(words: list[str], at: int) -> bool:
    """A negation stands within ``NEGATION_REACH`` words before ``at``, in
    the same clause."""
    before: list[str] = []
    for t in reversed(words[:at]):
        if t in _CLAUSE_ENDS:
            break
        before.append(t)
        if len(before) == NEGATION_REACH:
            break
    if any(t in _NEGATIONS or t.endswith("n't") for t in before):
        return True
    return len(before) >= 2 and (before[1], before[0]) in _NEGATING_PAIRS


def _same(word: str, expected: str) -> bool:
    """``word`` is ``expected`` or a plain inflection of it (numbers: equal)."""
    if word == expected:
        return True
    if not expected.isalpha() or not word.startswith(expected[:-1]):
        return False
    stem = expected[:-1] if expected.endswith("e") else expected
    forms = {expected + "s", expected + "es", expected + "d", expected + "ed", stem + "ing"}
    if len(expected) >= 3 and expected[-1] not in "aeiouwxy":  # stop -> stopped, stopping
        forms |= {expected + expected[-1] + "ed", expected + expected[-1] + "ing"}
    return word in forms


def _normal(token: str) -> str:
    """Numbers without thousands separators and leading zeros."""
    if not _NUMBER.fullmatch(token):
        return token
    whole, _, decimals = re.sub(r",(?=\d{3}(?:\D|$))", "", token).partition(".")
    whole = whole.lstrip("0") or "0"
    return f"{whole}.{decimals}" if decimals else whole


def _is_word(token: str) -> bool:
    return token[:1].isalnum()
