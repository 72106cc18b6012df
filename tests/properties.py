"""Hypothesis for the property tests, or a stand-in that skips them.

Hypothesis is a test extra (``pip install -e '.[test]'``). Without it, each
``@given`` test is skipped with the reason, and the other tests of its module
still run: a missing optional dependency never breaks collection.
"""

from __future__ import annotations

import functools

import pytest

try:
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st
except ImportError:
    REASON = "hypothesis is not installed (pip install -e '.[test]'): this property test is skipped"

    class _StandIn:
        """Whatever a module builds from strategies at import time: every
        attribute, call and operator gives the stand-in again."""

        def __getattr__(self, name):
            return self

        def __call__(self, *args, **kwargs):
            return self

        def __or__(self, other):
            return self

        __ror__ = __or__

    st = HealthCheck = _StandIn()

    def assume(condition) -> bool:
        return True

    def settings(*args, **kwargs):
        return lambda test: test

    def given(*args, **kwargs):
        def skipped(test):
            @functools.wraps(test)
            def run():  # no parameters: the strategies' arguments are no fixtures
                pytest.skip(REASON)
            del run.__wrapped__  # pytest would read the parameters through it
            return run
        return skipped

__all__ = ["HealthCheck", "assume", "given", "settings", "st"]
