"""Each rule's kernel rules count the new connections they decide; status shows them per rule
and per port's decision, an apply that writes the chain again keeps them, and they are never a
difference plan shows; each port's decisions count that port's connections (core/tallies).
Real connections from the lab's peers, both backends."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc
from tests.kernel.test_plan_impact import remember_web
from tests.lab import ATTACKER_V4, TRUSTED_V4, KernelLab, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

RULES = f"""\
default deny
allow from {TRUSTED_V4} to any port 80 proto tcp
reject from {ATTACKER_V4} to any port 80 proto tcp
"""
# Shorter than the kernel's first SYN retransmission (1 s): a dropped probe sends one SYN, and
# each SYN of a dropped connection is new to the kernel (nothing of it was kept).
DROPPED_PROBE = 0.5


def counts(lab: KernelLab, rules: Path) -> dict[str, object]:
    res = run_fwsync(lab, "status", "--format", "json", rules=rules)
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def by_rule(data: dict[str, object]) -> dict[tuple[str, str], int]:
    rows = data["rules"]
    assert isinstance(rows, list), data.get("rules_error")
    return {(r["origin"].rsplit("/", 1)[-1], r["verdict"]): r["connections"] for r in rows}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_each_rule_counts_the_connections_it_decided_and_keeps_them_across_applies(
        kernel_lab: KernelLab, tmp_path: Path, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", backend)
    lab = kernel_lab
    lab.publish(80, 80)
    lab.publish(5432, 81)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    name = "10-test.rules"
    assert by_rule(counts(lab, rules)) == {
        (f"{name}:2", "allow"): 0, (f"{name}:3", "reject"): 0, (f"{name}:1", "deny"): 0,
        ("protect localhost-publish", "deny"): 0}

    for _ in range(3):
        assert lab.trusted.probe(80) == "open"
    for _ in range(2):
        assert lab.attacker.probe(80) == "closed"  # the reject's reset
    for _ in range(4):
        assert lab.attacker.probe(5432, timeout=DROPPED_PROBE) == "filtered"
    assert lab.trusted.probe(80, v6=True, timeout=DROPPED_PROBE) == "filtered"  # the default
    data = counts(lab, rules)
    assert by_rule(data) == {
        (f"{name}:2", "allow"): 3, (f"{name}:3", "reject"): 2, (f"{name}:1", "deny"): 5,
        ("protect localhost-publish", "deny"): 0}

    # A rule added at the end: the chain is written again, the kept rules keep their counts.
    rules.joinpath(name).write_text(RULES + "allow from 192.0.2.9 to any port 5432 proto tcp\n")
    fwsync_ok(lab, "apply", rules=rules)
    after = by_rule(counts(lab, rules))
    assert after[(f"{name}:2", "allow")] == 3 and after[(f"{name}:1", "deny")] == 5, after
    assert after[(f"{name}:4", "allow")] == 0
    # Traffic moving the counters is not drift.
    assert lab.trusted.probe(80) == "open"
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
    assert by_rule(counts(lab, rules))[(f"{name}:2", "allow")] == 4
    text = run_fwsync(lab, "status", rules=rules).stdout
    assert "New connections decided, per rule" in text
    assert any(f"{name}:2" in line and "allow" in line and line.split()[2] == "4"
               for line in text.splitlines()), text


def test_each_decision_counts_the_connections_of_each_published_port(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """A rule without a port (and the default) decides for every published port: status counts
    its connections per port (a counter per published port before each decision), in JSON on
    each port's decisions and in the text."""
    lab = kernel_lab
    lab.publish(80, 80)
    lab.publish(8080, 80)
    remember_web(lab, (80, 8080))
    rules = write_rules(tmp_path, f"default deny\nallow from {TRUSTED_V4}\n")
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.trusted.probe(80) == "open"
    for _ in range(2):
        assert lab.trusted.probe(8080) == "open"
    for _ in range(3):
        assert lab.attacker.probe(80, timeout=DROPPED_PROBE) == "filtered"
    assert lab.attacker.probe(8080, timeout=DROPPED_PROBE) == "filtered"
    data = counts(lab, rules)
    name = "10-test.rules"
    got = {(p["host_ip"], p["host_port"], d["origin"].rsplit("/", 1)[-1]):
           (d["connections"], d["connections_of"])
           for p in data["ports"] for d in p["decisions"]}  # type: ignore[attr-defined]
    assert got == {
        ("0.0.0.0", 80, f"{name}:2"): (1, "port"), ("0.0.0.0", 80, f"{name}:1"): (3, "port"),
        ("0.0.0.0", 8080, f"{name}:2"): (2, "port"), ("0.0.0.0", 8080, f"{name}:1"): (1, "port"),
        # IPv6: the office's IPv4 rule is not among its decisions
        ("::", 80, f"{name}:1"): (0, "port"), ("::", 8080, f"{name}:1"): (0, "port")}, got
    assert by_rule(data)[(f"{name}:2", "allow")] == 3 and by_rule(data)[(f"{name}:1", "deny")] == 4
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
    text = run_fwsync(lab, "status", rules=rules).stdout
    line = next(x for x in text.splitlines() if x.strip().startswith("0.0.0.0:8080/tcp (web):"))
    assert line.endswith(f"{name}:2 2, {rules}/{name}:1 1") or \
        (f"{name}:2 2" in line and f"{name}:1 1" in line), text


def _scrape(lab: KernelLab, url: str) -> str:
    code = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5)" \
           ".read().decode())"
    return lab.host.run([sys.executable, "-I", "-c", code, url]).stdout


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_daemon_exports_what_status_counts(
        make_kernel_lab: Callable[..., KernelLab], tmp_path: Path, backend: str) -> None:
    lab = make_kernel_lab("nft")
    lab.publish(80, 80)
    lab.publish(5432, 81)
    rules = write_rules(tmp_path, RULES)
    port = 19818
    with DaemonProc(lab, rules, "--backend", backend, "--metrics-address",
                    f"127.0.0.1:{port}", env={"FWSYNC_ACTIVITY_INTERVAL": "0.2"}) as daemon:
        daemon.wait_ready()
        daemon.wait_for(lambda r: r.get("msg") == "reconcile" and r.get("result") == "applied")
        time.sleep(0.6)  # sampled at zero first: then the connections below are "last used"
        for _ in range(2):
            assert lab.trusted.probe(80) == "open"
        assert lab.attacker.probe(5432, timeout=DROPPED_PROBE) == "filtered"
        assert lab.attacker.probe(80) == "closed"
        text = _scrape(lab, f"http://127.0.0.1:{port}/metrics")
        time.sleep(0.6)  # a few of the daemon's samples
        data = json.loads(run_fwsync(lab, "status", "--format", "json", rules=rules,
                                     env=daemon.env).stdout)
        status = by_rule(data)
    samples = {}
    for line in text.splitlines():
        m = re.match(r'fwsync_rule_connections_total\{origin="([^"]*)",verdict="(\w+)"\} (\S+)',
                     line)
        if m:
            samples[(m.group(1).rsplit("/", 1)[-1], m.group(2))] = int(float(m.group(3)))
    name = "10-test.rules"
    assert samples == status, text
    assert samples[(f"{name}:2", "allow")] == 2 and samples[(f"{name}:1", "deny")] == 1
    denied = re.search(r"^fwsync_denied_connections_total (\S+)$", text, re.M)
    assert denied is not None and float(denied.group(1)) == 2, text  # the drop and the reject
    # When each rule was last used, from the daemon's samples: the allow and the reject grew
    # after sampling began, the IPv6 allow and localhost protection never did.
    rows = {(r["origin"].rsplit("/", 1)[-1], r["verdict"]): r for r in data["rules"]}
    assert rows[(f"{name}:2", "allow")]["last_connection"] is not None, data["rules"]
    assert rows[("protect localhost-publish", "deny")]["last_connection"] is None
    assert all(r["sampled_since"] is not None for r in data["rules"])
    assert data["idle_rules"] == []
