"""The doctor's docker-proxy CPU sampling against real processes: the scheduler decides how
much CPU they get, so these are not unit tests (marker `host`; `make test` runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fwsync.observe.host_facts import own_netns, sample_proxies
from tests.proxy_procs import BUSY, IDLE, process_named_docker_proxy

pytestmark = pytest.mark.host


def test_sampling_measures_the_cpu_time_of_a_real_busy_process(tmp_path: Path) -> None:
    """Real processes, real /proc: one spinning, one asleep. (The e2e test drives real traffic
    through a real docker-proxy; this one pins down the arithmetic without dockerd.) Not a
    unit test: it spawns processes and depends on the scheduler, so its bounds hold on a
    machine as loaded as it gets (a spinner that gets a few ticks in half a second), and the
    arithmetic is pinned down by what cannot vary: one thread never uses more than one core."""
    busy = process_named_docker_proxy(tmp_path, BUSY, 61001)
    idle = process_named_docker_proxy(tmp_path, IDLE, 61002)
    try:
        ours = own_netns()
        assert ours is not None
        facts = {p.host_port: p for p in sample_proxies(seconds=0.5, netns=ours)
                 if p.pid in (busy.pid, idle.pid)}
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
    assert set(facts) == {61001, 61002}
    busy_facts, idle_facts = facts[61001], facts[61002]
    assert busy_facts.interval >= 0.5
    tick = 1 / os.sysconf("SC_CLK_TCK")
    # Some CPU time (2 ticks = 4 % of a core) for the spinner whatever the load; none (at most a
    # tick of waking up) for the sleeper; and never more than one core for one thread: a wrong
    # clock-tick or interval in the arithmetic breaks one of these.
    assert busy_facts.cpu_seconds >= 2 * tick, busy_facts
    assert idle_facts.cpu_seconds <= tick, idle_facts
    assert busy_facts.cpu_share <= 1.0 + tick / busy_facts.interval, busy_facts
    assert (facts[61001].pid, facts[61001].container_ip) == (busy.pid, "198.51.100.130")


