"""The probe-loop record the scenarios judge by (pure)."""

from __future__ import annotations

import pytest

from tests.scenarios.world import ProbeLog, WorldError

pytestmark = pytest.mark.unit


def log_of(*states: str) -> ProbeLog:
    log = ProbeLog("trusted", 5432)
    log.set_lines("\n".join(f'[{i * 0.5}, "{s}"]' for i, s in enumerate(states)) + "\n")
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


def test_wait_reads_the_loop_as_it_writes_a_cut_line_included() -> None:
    written = ['[0.0, "filtered"]\n', '[0.5, "open"]\n', '[1.0, "op']
    log = ProbeLog("trusted", 5432, read=lambda: "".join(written))
    log.wait(lambda lg: lg.first("open") is not None, "an open", timeout=1)
    assert log.attempts == [(0.0, "filtered"), (0.5, "open")]

    def writing() -> str:  # the loop goes on between two reads
        text = "".join(written)
        written.append(f'[{len(written) * 0.5}, "open"]\n')
        return text
    written[-1] += 'en"]\n'
    log.read = writing
    log.more_attempts(2, timeout=1)
    assert len(log.attempts) == 5
    log.read = lambda: "".join(written)
    with pytest.raises(WorldError, match="did not record 1 more attempts"):
        log.more_attempts(1, timeout=0.3)
