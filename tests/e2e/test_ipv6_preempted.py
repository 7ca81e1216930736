"""IPv6 with the iptables backend and no daemon. Docker 20.10 puts no DOCKER-USER jump into
ip6tables' FORWARD, so fwsync jumps from FORWARD itself, first; a dockerd restart, or a new
IPv6 network, inserts Docker's rules above that jump (`-o BRIDGE -j DOCKER`, which accepts
published ports), and until the next apply a published IPv6 port is open. Whatever the engine
does, fwsync must never say it is enforcing while a port its rules deny is open: `plan` shows
the pre-emption as drift and `status` says NO; the next `apply` closes it. Real dockerd, real
packets from the attacker over IPv6."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import DockerLab, run_fwsync, wait_for
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

RULES = "default deny\nallow from 2001:db8:1::10 to any port 5432,6000 proto tcp\n"
V6NET = "2001:db8:d0d::/64"


def enforcing_line(lab: DockerLab, rules: Path) -> str:
    status = fwsync_ok(lab, "status", rules=rules).stdout  # the backend of the test
    [line] = [ln for ln in status.splitlines() if ln.startswith("Enforcing:")]
    return line


def check_truthful(lab: DockerLab, rules: Path, port: int, seen: dict[str, int]) -> None:
    """The attacker's verdict on PORT over IPv6, against what plan and status say."""
    got = lab.attacker.probe(port, v6=True)
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules,
                      env={"FWSYNC_BACKEND": "iptables"})
    line = enforcing_line(lab, rules)
    seen[got] = seen.get(got, 0) + 1
    if got == "open":
        assert plan.returncode == 2 and "ipv6 jump" in plan.stdout, plan.stdout
        assert not line.startswith("Enforcing: yes"), line
    else:
        assert got == "filtered"


def test_ipv6_preempted_by_docker_is_never_reported_as_enforced(
        make_docker_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")  # run_fwsync passes it on
    lab: DockerLab = make_docker_lab(ipv6=True)
    lab.run_web("db", {"80/tcp": 5432}, restart_policy="always")
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules, env={"FWSYNC_BACKEND": "iptables"})
    assert lab.attacker.probe(5432, v6=True) == "filtered"
    assert lab.trusted.probe(5432, v6=True) == "open"
    assert enforcing_line(lab, rules).startswith("Enforcing: yes")
    seen: dict[str, int] = {}

    # dockerd restarts (an upgrade, a crash): Docker inserts its FORWARD rules again.
    lab.stop_dockerd()
    lab.start_dockerd()
    wait_for(lab.trusted, lab.trusted.host_v6, 5432, timeout=60)
    check_truthful(lab, rules, 5432, seen)
    fwsync_ok(lab, "apply", rules=rules, env={"FWSYNC_BACKEND": "iptables"})
    assert lab.attacker.probe(5432, v6=True) == "filtered"
    assert enforcing_line(lab, rules).startswith("Enforcing: yes")

    # A new IPv6 network, and a container publishing on it.
    lab.client.networks.create("v6net", driver="bridge", enable_ipv6=True, ipam={
        "Driver": "default", "Config": [{"Subnet": V6NET}]})
    lab.run_web("app", {"80/tcp": 6000}, network="v6net")
    wait_for(lab.trusted, lab.trusted.host_v6, 6000, timeout=30)
    check_truthful(lab, rules, 6000, seen)
    fwsync_ok(lab, "apply", rules=rules, env={"FWSYNC_BACKEND": "iptables"})
    assert lab.attacker.probe(6000, v6=True) == "filtered"
    assert lab.attacker.probe(5432, v6=True) == "filtered"
    print(f"attacker over IPv6 before the next apply: {seen} ({lab.engine.name})")


def test_auto_holds_the_ipv6_policy_without_a_daemon(
        make_docker_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` sees Docker's IPv6 rules without a DOCKER-USER chain (20.10 --ip6tables) and
    takes the nftables backend, whose table runs before every iptables chain: the restart and
    the new network leave nothing open, with no apply in between."""
    monkeypatch.setenv("FWSYNC_BACKEND", "auto")
    lab: DockerLab = make_docker_lab(ipv6=True)
    lab.run_web("db", {"80/tcp": 5432}, restart_policy="always")
    rules = write_rules(tmp_path, RULES)
    out = fwsync_ok(lab, "apply", rules=rules, env={"FWSYNC_BACKEND": "auto"}).stdout
    release = lab.engine.release
    if release < (23, 0):
        assert "Backend: nftables (auto: Docker writes its IPv6 rules without a DOCKER-USER" \
            in out, out
    assert lab.attacker.probe(5432, v6=True) == "filtered"

    lab.stop_dockerd()
    lab.start_dockerd()
    wait_for(lab.trusted, lab.trusted.host_v6, 5432, timeout=60)
    assert lab.attacker.probe(5432, v6=True) == "filtered"
    lab.client.networks.create("v6net", driver="bridge", enable_ipv6=True, ipam={
        "Driver": "default", "Config": [{"Subnet": V6NET}]})
    lab.run_web("app", {"80/tcp": 6000}, network="v6net")
    wait_for(lab.trusted, lab.trusted.host_v6, 6000, timeout=30)
    assert lab.attacker.probe(6000, v6=True) == "filtered"
    # The new network's own traffic (its containers to published ports) is not exempt before
    # fwsync has seen its bridge (trusted by what the host shows, never by name): the kernel
    # refuses more than the rules say, and status says so instead of "yes". The next apply
    # trusts the bridge.
    line = enforcing_line(lab, rules)
    assert line.startswith("Enforcing: NO") and "policy unjudged, kernel deny" in line, line
    fwsync_ok(lab, "apply", rules=rules, env={"FWSYNC_BACKEND": "auto"})
    assert lab.attacker.probe(6000, v6=True) == "filtered"
    assert enforcing_line(lab, rules).startswith("Enforcing: yes")
