"""The one definition of `limit` (a token bucket per source) and its model."""

from __future__ import annotations

import pytest

from fwsync.core.ruleset import LIMIT, RateLimit

pytestmark = pytest.mark.unit


def test_a_burst_then_one_every_refill_interval() -> None:
    assert RateLimit(burst=5, per_minute=10, forget_after=30) == LIMIT
    burst = [0.0] * 7
    assert LIMIT.verdicts(burst) == [True] * 5 + [False] * 2
    # 6 s per token: just before the refill edge still refused, just after let through.
    assert LIMIT.verdicts([*burst, 5.9]) == [True] * 5 + [False] * 3
    assert LIMIT.verdicts([*burst, 6.1, 6.2]) == [True] * 5 + [False] * 2 + [True, False]


def test_refused_attempts_take_nothing_and_an_idle_source_is_forgotten() -> None:
    hammering = [i * 0.5 for i in range(40)]  # 2 a second for 20 s
    allowed = sum(LIMIT.verdicts(hammering))
    assert allowed == 5 + 3  # the burst, then one per 6 s (at 6, 12 and 18 s)
    assert LIMIT.verdicts([0.0] * 5 + [31.0] * 5) == [True] * 10
