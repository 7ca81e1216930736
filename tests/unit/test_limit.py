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


def test_an_ipv6_source_is_its_64_and_a_full_table_refuses_a_new_source() -> None:
    assert LIMIT.capacity == 65535
    assert LIMIT.bucket("203.0.113.7") == "203.0.113.7"
    assert LIMIT.bucket("2001:db8:2::7") == LIMIT.bucket("2001:db8:2::99") == "2001:db8:2::/64"
    assert LIMIT.bucket("2001:db8:3::7") != LIMIT.bucket("2001:db8:2::7")
    # One /64, two addresses: one bucket of 5.
    v6 = [(0.0, "2001:db8:2::7")] * 3 + [(0.0, "2001:db8:2::99")] * 3
    assert LIMIT.outcomes(v6) == ["ok"] * 5 + ["over"]
    # Room for three sources: the fourth and fifth are refused outright (dropped), a source
    # the table holds keeps its own bucket, and a forgotten one makes room again.
    small = RateLimit(burst=5, per_minute=10, forget_after=30, capacity=3)
    sources = [f"203.0.113.{n}" for n in range(20, 25)]
    assert small.outcomes([(0.0, s) for s in sources]) == ["ok"] * 3 + ["full"] * 2
    assert small.outcomes([*((0.0, s) for s in sources), (1.0, sources[0])])[-1] == "ok"
    assert small.outcomes([*((0.0, s) for s in sources), (31.0, sources[4])])[-1] == "ok"
