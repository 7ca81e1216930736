"""Docker 20.10 deletes and re-inserts FORWARD's jump to DOCKER-USER at every network it creates
(EnsureJumpRule: `-D FORWARD -j DOCKER-USER`, then `-I FORWARD -j DOCKER-USER`, two iptables
runs). In between, a new connection to a published port does not pass DOCKER-USER. With the
iptables backend and the daemon, an attacker probing every 20 ms during 30 network creates got
in 14 times of 444; the nftables backend, in its own table on the forward hook, 0 of 456
(issue 19, item 8). `auto` on 20.10 chooses iptables and says what that trades.

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
        lab: DockerLab, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "iptables" and int(lab.version.split(".")[0]) < 28:
        # Measured on this branch: 20.10, 8 runs: 1, 2, 5, 2, 0, 0, 0, 1 connections got in
        # (of 436-512); 26.1: 1 of 491, 0 of 503; 28.5 (FORWARD only jumps to DOCKER-USER
        # and DOCKER-FORWARD; networks' rules live in the latter): 0 of 362-391. The
        # nftables backend 0 in each. Main before (the daemon on its 1 s tick): 17 of 451, 20
        # of 472 on 20.10; the netlink reaction narrows it (the daemon jumps from FORWARD
        # itself while Docker's jump is gone), it does not close it. A second jump of
        # fwsync's from FORWARD (right after Docker's jump to DOCKER-USER) would judge these
        # packets, but every packet fwsync allows (RETURN) would then pass its rules twice,
        # and a `limit` (hashlimit) would count it twice; it needs a mark saying "judged"
        # first. Not strict: a run where none gets in is common now.
        request.applymarker(pytest.mark.xfail(reason="Docker's jump window (before 28) is open "
                                              "with the iptables backend (issue 19 item 8)"))
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
