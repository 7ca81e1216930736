"""The probe-loop record the scenarios judge by (pure)."""

from __future__ import annotations

import pytest

from tests.scenarios.world import ProbeLog

pytestmark = pytest.mark.unit


def log_of(*states: str) -> ProbeLog:
    log = ProbeLog("trusted", 5432)
    log.add_lines("\n".join(f'[{i * 0.5}, "{s}"]' for i, s in enumerate(states)) + "\n")
    return log


def test_outage_is_the_first_loss_and_the_first_open_after_it() -> None:
    assert log_of("open", "open", "filtered", "closed", "open").outage() == (1.0, 2.0)


def test_no_outage_when_never_down_or_never_back() -> None:
    assert log_of("open", "open").outage() is None
    assert log_of("open", "filtered", "filtered").outage() is None


def test_summary_counts_every_state() -> None:
    log = log_of("filtered", "closed", "filtered")
    assert log.counts() == {"filtered": 2, "closed": 1}
    assert log.summary() == "trusted -> 5432: 1 closed, 2 filtered over 1 s"
