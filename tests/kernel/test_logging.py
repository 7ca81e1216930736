"""Logged decisions (issue 20, items 1-2): the rules' `logging` level and a rule's `log` send
new connections to fwsync's NFLOG group, `fwsync daemon` names each with the rule, the
container and the address and port the client dialled (before Docker's DNAT), and `fwsync log`
shows them. Real connections from the lab's peers through the kernel's rules, both backends,
all three lab layouts (Docker's rules written by hand; the container is remembered, as fwsync
remembers Docker, tests/kernel/test_plan_impact.py)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc
from tests.fail2ban import parse_report, run_fail2ban_regex
from tests.kernel.test_plan_impact import remember_web
from tests.lab import (
    ATTACKER_V4,
    HOST_ATTACKER_V4,
    HOST_TRUSTED_V4,
    TRUSTED_V4,
    KernelLab,
    run_fwsync,
)
from tests.steps import write_rules

pytestmark = pytest.mark.kernel
FILTER = Path(__file__).resolve().parents[2] / "monitoring/fail2ban/filter.d/fwsync.conf"
DROPPED_PROBE = 0.5  # one SYN per dropped probe (the kernel retries after 1 s)


def logged(lab: KernelLab, daemon: DaemonProc, *args: str) -> list[dict[str, object]]:
    res = run_fwsync(lab, "log", "--format", "json", *args, env=daemon.env)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


@contextlib.contextmanager
def web_daemon(lab: KernelLab, rules: Path, backend: str) -> Iterator[DaemonProc]:
    """A container `web` publishing 80 (remembered, as fwsync remembers Docker), and `fwsync
    daemon` on `rules`, ready and applied."""
    lab.publish(80, 80)
    remember_web(lab)
    with DaemonProc(lab, rules, "--backend", backend) as daemon:
        daemon.wait_ready()
        daemon.wait_for(lambda r: r.get("msg") == "reconcile" and r.get("result") == "applied")
        yield daemon


def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.1)


def test_a_refused_attempt_is_logged_with_the_port_dialled_the_container_and_the_rule(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    rules = write_rules(tmp_path, f"default deny\nlogging low\n"
                                  f"allow from {TRUSTED_V4} to any port 80 proto tcp\n")
    with web_daemon(lab, rules, backend) as daemon:
        for _ in range(3):  # the per-source burst: all three get through the rate limit
            assert lab.attacker.probe(80, timeout=DROPPED_PROBE) == "filtered"
        assert lab.trusted.probe(80) == "open"
        until(lambda: len(logged(lab, daemon)) >= 3, "three logged decisions")
        time.sleep(0.3)
        got = logged(lab, daemon)
        assert len(got) == 3, got  # the attacker's three, not the allowed client's
        d = got[0]
        # The address dialled: conntrack's original tuple where the kernel attaches it to
        # NFLOG (CONFIG_NETFILTER_NETLINK_GLUE_CT); without it (this lab's
        # kernel) the binding that leads to the container, whose host address is 0.0.0.0.
        glue = next(r for r in daemon.records() if r.get("msg") == "reading logged decisions")
        dialled = (HOST_ATTACKER_V4, "conntrack") if glue["original_destination"] else \
            ("0.0.0.0", "docker")
        assert (d["src"], d["host_ip"], d["dialled_from"], d["port"], d["proto"],
                d["container"], d["verdict"]) == \
            (ATTACKER_V4, *dialled, 80, "tcp", "web", "deny"), d
        assert str(d["origin"]).endswith("10-test.rules:1"), d  # the default
        assert d["dest"] != d["host_ip"] and d["dport"] == 80  # the container's, after DNAT
        text = daemon.log.read_text()
        line = next(x for x in text.splitlines() if "[FWSYNC BLOCK]" in x)
        # The lines this lab produced, through the shipped fail2ban filter (fail2ban-regex from
        # Debian's package): the attacker's three attempts, and nothing else of the daemon's.
        regex = run_fail2ban_regex(text, FILTER, tmp_path)
        assert regex.returncode == 0, regex.stderr
        report = parse_report(regex.stdout)
        assert report.hosts == [ATTACKER_V4] * 3, regex.stdout
        assert f"SRC={ATTACKER_V4} DST={dialled[0]} PROTO=TCP" in line and "DPT=80" in line
        assert "CONTAINER=web" in line
        # `log` on a rule logs what it lets in too, whatever the level.
        rules.joinpath("10-test.rules").write_text(
            f"default deny\nlogging low\nallow log from {TRUSTED_V4} to any port 80 proto tcp\n")
        daemon.wait_for(lambda r: r.get("msg") == "reconcile" and r.get("result") == "applied"
                        and "rules" in str(r.get("trigger")), timeout=15)
        assert lab.trusted.probe(80) == "open"
        until(lambda: any(x["verdict"] == "allow" for x in logged(lab, daemon)),
              "the allowed connection logged")
        allowed = [x for x in logged(lab, daemon) if x["verdict"] == "allow"]
        assert len(allowed) == 1 and allowed[0]["src"] == TRUSTED_V4
        assert allowed[0]["host_ip"] == (HOST_TRUSTED_V4 if glue["original_destination"]
                                         else "0.0.0.0")
        assert str(allowed[0]["origin"]).endswith("10-test.rules:3")
        assert len(logged(lab, daemon, "--since", "1m")) == 4


def test_a_limit_rules_refusals_over_its_rate_are_logged_as_ufws_limit_block(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """What a `limit` rule refuses over its rate is logged (ufw's `[UFW LIMIT BLOCK]`), at the
    rate being asked once: the 6th and 7th of a burst are refused and logged, the 5 before are
    let in and not logged (`logging low`), another source keeps its own bucket, the refusals
    are counted for the rule, and the kernel reads back as the rules say."""
    lab = kernel_lab
    rules = write_rules(tmp_path, "default deny\nlogging low\nlimit 80/tcp\n")
    with web_daemon(lab, rules, backend) as daemon:
        seen = [lab.attacker.probe(80) for _ in range(7)]
        assert seen == ["open"] * 5 + ["closed"] * 2, seen  # LIMIT: a burst of 5
        assert lab.trusted.probe(80) == "open"
        until(lambda: len(logged(lab, daemon)) >= 2, "two logged refusals")
        time.sleep(0.3)
        got = logged(lab, daemon)
        assert [(d["src"], d["verdict"], d["port"], d["container"]) for d in got] == \
            [(ATTACKER_V4, "limit", 80, "web")] * 2, got
        assert all(str(d["origin"]).endswith("10-test.rules:3") for d in got), got
        text = daemon.log.read_text()
        assert text.count("[FWSYNC LIMIT BLOCK]") == 2, text
        regex = run_fail2ban_regex(text, FILTER, tmp_path)
        assert regex.returncode == 0, regex.stderr
        assert parse_report(regex.stdout).hosts == [ATTACKER_V4] * 2, regex.stdout
        plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules, env=daemon.env)
        assert plan.returncode == 0, plan.stdout
        data = json.loads(run_fwsync(lab, "status", "--format", "json", rules=rules,
                                     env=daemon.env).stdout)
        counts = {(r["origin"].rsplit("/", 1)[-1], r["verdict"]): r["connections"]
                  for r in data["rules"]}
        assert counts[("10-test.rules:3", "reject")] == 2, counts
        assert counts[("10-test.rules:3", "allow")] == 6, counts  # 5 + the trusted client's
        # Logging off: the chain of logged refusals is made only when used, and goes.
        rules.joinpath("10-test.rules").write_text("default deny\nlogging off\nlimit 80/tcp\n")
        # Whichever reconcile puts them in (one a drift event started may read them first).
        until(lambda: run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules,
                                 env=daemon.env).returncode == 0, "the rules applied", 15)
        if backend == "iptables":
            held = lab.save() + lab.save(v6=True)
            assert "FWSYNC-LIMITED" not in held and ":FWSYNC-INBOUND" in held, held
        else:
            held = lab.host.run(["nft", "list", "table", "inet", "fwsync"]).stdout
            assert "chain limited" not in held and "chain inbound" in held, held
