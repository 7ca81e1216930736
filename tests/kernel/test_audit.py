"""Audit (issue 21, item 1): an audited rule (`audit deny ...`) and a policy in `mode audit`
decide nothing: a client they would cut keeps connecting, and `fwsync log --would-deny` shows
the attempts with the rule that would have refused them; status counts them as `audit` and
says the policy is not enforced. Real connections from the lab's peers through the kernel's
rules, both backends, all three lab layouts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc
from tests.kernel.test_logging import logged, until, web_daemon
from tests.kernel.test_plan_impact import remember_web
from tests.lab import ATTACKER_V4, TRUSTED_V4, KernelLab, run_fwsync
from tests.steps import write_rules

pytestmark = pytest.mark.kernel


def held(lab: KernelLab, rules: Path, daemon: DaemonProc, timeout: float = 15) -> None:
    """The daemon has put the rules on disk into the kernel: plan has nothing to do. (Whichever
    reconcile does it: one a drift event started may read the new files first.)"""
    until(lambda: run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules,
                             env=daemon.env).returncode == 0, "the rules applied", timeout)


def _status(lab: KernelLab, rules: Path, daemon: DaemonProc) -> dict[str, object]:
    res = run_fwsync(lab, "status", "--format", "json", rules=rules, env=daemon.env)
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def test_an_audited_deny_lets_the_client_in_and_logs_what_it_would_refuse(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    rules = write_rules(tmp_path, "default allow\n")
    with web_daemon(lab, rules, backend) as daemon:
        # The change to try: the attacker's network cut off, audited first.
        rules.joinpath("10-test.rules").write_text(
            f"default allow\naudit deny from {ATTACKER_V4}/32 to any port 80 proto tcp\n")
        held(lab, rules, daemon)
        for _ in range(3):  # the log's per-source burst: all three are logged
            assert lab.attacker.probe(80) == "open", "audited: it decides nothing"
        assert lab.trusted.probe(80) == "open"
        until(lambda: len(logged(lab, daemon, "--would-deny")) >= 3, "three would-deny")
        time.sleep(0.3)
        got = logged(lab, daemon, "--would-deny")
        assert [(d["src"], d["verdict"], d["port"], d["container"]) for d in got] == \
            [(ATTACKER_V4, "would-deny", 80, "web")] * 3, got
        assert all(str(d["origin"]).endswith("10-test.rules:2") for d in got), got
        assert "[FWSYNC AUDIT]" in daemon.log.read_text()
        data = _status(lab, rules, daemon)
        assert str(data["enforcing"]).startswith("NO, AUDIT MODE"), data["enforcing"]
        assert data["audited"] == [f"{rules}/10-test.rules:2 would deny"], data["audited"]
        counts = {(r["origin"].rsplit("/", 1)[-1], r["verdict"]): r["connections"]
                  for r in data["rules"]}  # type: ignore[attr-defined]
        assert counts[("10-test.rules:2", "audit")] == 3, counts
        decisions = data["ports"][0]["decisions"]  # type: ignore[index]
        assert [d["action"] for d in decisions] == ["audit deny", "allow"], decisions
        plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules, env=daemon.env)
        assert plan.returncode == 0, plan.stdout
        explain = run_fwsync(lab, "explain", ATTACKER_V4, "80/tcp", rules=rules, env=daemon.env)
        assert "would deny" in explain.stdout and "audited, it decides nothing" in \
            explain.stdout, explain.stdout
        assert "the kernel's rules agree" in explain.stdout, explain.stdout
        # Enforced: the same rule without `audit` cuts the attacker off.
        rules.joinpath("10-test.rules").write_text(
            f"default allow\ndeny from {ATTACKER_V4}/32 to any port 80 proto tcp\n")
        held(lab, rules, daemon)
        assert lab.attacker.probe(80, timeout=0.5) == "filtered"
        assert str(_status(lab, rules, daemon)["enforcing"]).startswith("yes")


def test_mode_audit_audits_the_default_too(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(80, 80)
    remember_web(lab)
    rules = write_rules(tmp_path, f"default deny\nmode audit\n"
                                  f"allow from {TRUSTED_V4} to any port 80 proto tcp\n")
    res = run_fwsync(lab, "apply", "--yes", "--backend", backend, rules=rules)
    assert res.returncode == 0, res.stdout + res.stderr  # audit mode is what was asked
    assert "Applied, NOT ENFORCED: audited, not enforced: " in res.stdout, res.stdout
    with DaemonProc(lab, rules, "--backend", backend) as daemon:
        daemon.wait_ready()
        held(lab, rules, daemon)
        assert lab.attacker.probe(80) == "open", "the default is audited: it refuses nothing"
        assert lab.trusted.probe(80) == "open"
        until(lambda: len(logged(lab, daemon, "--would-deny")) >= 1, "a would-deny")
        time.sleep(0.3)
        got = logged(lab, daemon, "--would-deny")
        assert [(d["src"], d["verdict"]) for d in got] == [(ATTACKER_V4, "would-deny")], got
        assert str(got[0]["origin"]).endswith("10-test.rules:1"), got  # the default's line
        data = _status(lab, rules, daemon)
        assert str(data["enforcing"]).startswith("NO, AUDIT MODE"), data["enforcing"]
        assert data["audited"] == [f"{rules}/10-test.rules:1 would deny"], data["audited"]
