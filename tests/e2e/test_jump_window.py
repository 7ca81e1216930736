"""Docker 20.10 deletes and re-inserts FORWARD's jump to DOCKER-USER at every network it creates
(EnsureJumpRule: `-D FORWARD -j DOCKER-USER`, then `-I FORWARD -j DOCKER-USER`, two iptables
runs). In between, a new connection to a published port does not pass DOCKER-USER. With the
iptables backend jumping from DOCKER-USER alone and the daemon running, an attacker probing
every 20 ms during 30 network creates got in 14 times of 444 (0-5 of 436-512 in 8 runs once the
daemon heard nf_tables' changes); the nftables backend, in its own table on the forward hook, 0
of 456 (issue 19, item 8). The iptables backend now also jumps from FORWARD itself
(tests/kernel/test_jump_guard.py holds the moment open by hand): no connection may get in.

Every engine runs it: 26.1 has the same window, 28.5 not."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc, TightLoop
from tests.lab import DockerLab, run_fwsync
from tests.steps import write_rules

pytestmark = pytest.mark.e2e
CREATES = 30
RULES = ("default deny incoming\ndefine office 198.51.100.0/25\n"
         "allow from $office to any port 7000\n")


@pytest.fixture
def lab(make_docker_lab: Callable[..., DockerLab]) -> Iterator[DockerLab]:
    lab = make_docker_lab()
    lab.run_web("web-1", {"80/tcp": 6000})
    yield lab


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_no_connection_gets_in_while_docker_creates_networks(
        lab: DockerLab, tmp_path: Path, backend: str) -> None:
    rules = write_rules(tmp_path, RULES)
    with DaemonProc(lab, rules, "--backend", backend) as daemon:
        daemon.wait_ready()
        assert lab.attacker.probe(6000) == "filtered"
        # Each network removed again after it is made: the lab's address pool holds eight.
        with TightLoop(lab.attacker, [6000], gap=0.02, give_up=0.5) as attacker:
            for i in range(CREATES):
                lab.client.networks.create(f"jw-{i}", driver="bridge").remove()
            time.sleep(0.5)
            seen = attacker.stop()[6000]
        print(f"{backend}: {seen}")
        assert seen["attempts"] > 100, seen
        assert seen["open"] == 0, f"attacker connected {seen['open']} times of {seen['attempts']}"
    run_fwsync(lab, "remove")
