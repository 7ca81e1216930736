"""`fwsync daemon` beside a real dockerd in a network namespace, with real packets from the
trusted host (198.51.100.10, in $office) and an attacker (203.0.113.7). The daemon runs as a
subprocess in HOST (tests/daemon_helpers.py), logs JSON, and is ended by its pid."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fwsync.daemon.coalesce import MIN_INTERVAL
from fwsync.daemon.rules_watch import fingerprint
from fwsync.rules.load import load_rules
from tests.daemon_helpers import DaemonProc, TightLoop
from tests.lab import DockerLab, LabError, ruleset_snapshot, run_fwsync, wait_for
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OFFICE = """default deny incoming
define office 198.51.100.0/25
allow from $office to container web-*
allow from $office to any port 5432 proto tcp
"""
REQUIRED = 2.0  # the daemon's promise: drift and rules edits enforced "within 2 seconds"

StartDaemon = Callable[..., DaemonProc]


@pytest.fixture
def daemons() -> Iterator[StartDaemon]:
    """start(lab, rules, *args, env=..., docker=True): a running daemon whose rules are
    enforced (and, with docker, whose Docker events are followed). Stopped by pid at the end,
    and its rules removed."""
    started: list[DaemonProc] = []

    def start(lab: DockerLab, rules: Path, *args: str, env: dict[str, str] | None = None,
              docker: bool = True, ready: bool = True) -> DaemonProc:
        d = DaemonProc(lab, rules, *args, env=env).start()
        started.append(d)
        if ready:
            d.wait_ready()
        if docker:
            d.wait_for(lambda r: r.get("msg") == "reconcile"
                       and r["trigger"].startswith("reconnect"), what="the reconcile after "
                       "connecting to Docker")
        return d

    try:
        yield start
    finally:
        for d in started:
            d.stop()
        for d in started:
            if d.lab.host.exists():
                run_fwsync(d.lab, "remove")


def seconds_until(check: Callable[[], bool], limit: float, what: str) -> float:
    """How long until check() holds; polls fast. Gives up (failing) well after `limit`, so a
    test can report the time it saw rather than only that it was too slow."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > limit + 5:
            raise AssertionError(f"{what}: not after {limit + 5:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def reachable(peer: object, port: int) -> Callable[[], bool]:
    return lambda: peer.probe(port, timeout=0.25) == "open"  # type: ignore[attr-defined]


def fwsync_jump(lab: DockerLab) -> bool:
    return "-A DOCKER-USER -j FWSYNC-FORWARD" in lab.host.run(
        ["iptables-save", "-t", "filter"]).stdout


def state(d: DaemonProc) -> dict[str, object]:
    data = json.loads(d.state.read_text())
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- Docker events


def test_denied_port_is_never_reachable_from_the_moment_docker_run_is_called(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    d = daemons(dlab, write_rules(tmp_path, OFFICE))
    before = len(d.reconciles())
    with TightLoop(dlab.attacker, [6000, 7000]) as attacker, \
            TightLoop(dlab.trusted, [6000, 7000]) as office:
        dlab.run_web("api-1", {"80/tcp": 6000}, wait=False)  # no rule allows it
        dlab.run_web("web-1", {"80/tcp": 7000}, wait=False)  # `to container web-*`: office
        d.wait_reconcile(lambda r: "start web-1" in r["trigger"], after=before)
        wait_for(dlab.trusted, dlab.trusted.host_v4, 7000, timeout=10)
        time.sleep(0.5)  # keep knocking after the reconcile too
        seen_attacker, seen_office = attacker.stop(), office.stop()
    assert seen_attacker[6000]["open"] == 0 and seen_attacker[7000]["open"] == 0, seen_attacker
    assert seen_office[6000]["open"] == 0, f"6000 is no office port: {seen_office}"
    # The same client does see an open port: it could have failed this test.
    assert seen_office[7000]["open"] > 0, seen_office
    assert min(s["attempts"] for s in (*seen_attacker.values(), *seen_office.values())) > 100


def test_allowed_port_and_a_new_rule_take_effect_within_2s(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    rules = write_rules(tmp_path, OFFICE)
    d = daemons(dlab, rules)
    before = len(d.reconciles())
    t0 = time.monotonic()
    dlab.run_web("web-2", {"80/tcp": 7000, "81/tcp": 7100}, wait=False)
    elapsed = seconds_until(reachable(dlab.trusted, 7000), REQUIRED,
                            "the office reaches web-2 (a `to container web-*` rule)")
    took = time.monotonic() - t0
    assert took <= REQUIRED, f"reachable {took:.2f} s after `docker run` was called"
    assert elapsed <= REQUIRED
    served = d.wait_reconcile(lambda r: "start web-2" in r["trigger"], after=before)
    assert served["result"] == "applied" and served["event_latency_ms"] < 1000
    assert dlab.attacker.probe(7000) == "filtered"

    assert dlab.attacker.probe(7100) == "filtered"
    (rules / "20-more.rules").write_text("allow 7100/tcp comment 'added while running'\n")
    took = seconds_until(reachable(dlab.attacker, 7100), REQUIRED,
                         "a rule added to the rules directory")
    assert took <= REQUIRED, f"the new rule took {took:.2f} s"
    assert dlab.attacker.probe(7000) == "filtered", "the rest of the policy still holds"
    rec = d.wait_reconcile(lambda r: r["trigger"].startswith("rules:"), after=before)
    assert rec["result"] == "applied" and "ipv4 chain FWSYNC-INBOUND" in rec["changed"]


def test_compose_sized_burst_is_a_handful_of_reconciles(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    d = daemons(dlab, write_rules(tmp_path, OFFICE))
    before = len(d.reconciles())
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # `docker compose up` starts services in parallel
        list(pool.map(lambda i: dlab.run_web(f"web-c{i}", {"80/tcp": 7200 + i}, wait=False),
                      range(30)))
    burst = time.monotonic() - t0
    last = d.wait_reconcile(lambda r: r.get("ports") == 60, after=before,
                            what="a reconcile that sees all 30 services (v4 + v6 bindings)")
    served = [r for r in d.reconciles()[before:] if r.get("urgent_events")]
    # The coalescer's promise: reconciles that serve urgent Docker events (start, die, ...)
    # start at least MIN_INTERVAL apart. Over the burst as long as this machine took to start
    # 30 containers, that is one per MIN_INTERVAL, plus the first served at once and one after
    # the last event (on a machine that starts them in 3 s: at most 5, not 30). Measured
    # against the burst's own length, so a slow machine gets a looser bound, not a failure.
    # (A reconcile of lazy events alone, `network connect`, is spaced from every other one.)
    assert 1 <= len(served) <= burst / MIN_INTERVAL + 2, (burst, [r["trigger"] for r in served])
    assert sum(r["urgent_events"] for r in served) >= 30, "every start served"
    assert last["result"] in ("applied", "unchanged")
    assert run_fwsync(dlab, "plan", "--detailed-exitcode", rules=d.rules,
                      env=d.env).returncode == 0, "every service is governed"
    assert dlab.trusted.probe(7229) == "open" and dlab.attacker.probe(7229) == "filtered"


# --------------------------------------------------------------------------- drift & dockerd


def test_flushed_docker_user_and_chain_are_repaired_within_2s(
        make_docker_lab: Callable[..., DockerLab], tmp_path: Path,
        daemons: StartDaemon) -> None:
    lab = make_docker_lab()
    lab.run_web("web-1", {"80/tcp": 6000, "81/tcp": 7000})
    d = daemons(lab, write_rules(tmp_path, OFFICE))
    assert lab.attacker.probe(6000) == "filtered" and lab.trusted.probe(7000) == "open"

    lab.host.run(["iptables", "-F", "DOCKER-USER"])
    took = seconds_until(lambda: fwsync_jump(lab), REQUIRED, "DOCKER-USER → fwsync repaired")
    assert took <= REQUIRED, f"repaired after {took:.2f} s"
    assert lab.attacker.probe(6000) == "filtered" and lab.trusted.probe(7000) == "open"
    drift = d.wait_for(lambda r: r.get("msg") == "drift", what="a drift line")
    assert drift["objects"] == ["ipv4 jump"]
    repair = d.wait_for(lambda r: r.get("msg") == "reconcile" and bool(r.get("drift")))
    assert repair["drift"] == ["ipv4 jump"] and repair["trigger"] == "drift: ipv4 jump"

    # Someone empties fwsync's own chain: everything published would be open.
    lab.host.run(["iptables", "-F", "FWSYNC-INBOUND"])
    took = seconds_until(lambda: "default deny" in lab.host.run(
        ["iptables", "-S", "FWSYNC-INBOUND"]).stdout, REQUIRED, "FWSYNC-INBOUND refilled")
    assert took <= REQUIRED
    assert lab.attacker.probe(6000) == "filtered" and lab.trusted.probe(7000) == "open"
    assert state(d)["drift_repairs"] == 2


def test_a_forward_chain_without_dockers_jump_still_reaches_fwsync(
        make_docker_lab: Callable[..., DockerLab], tmp_path: Path,
        daemons: StartDaemon) -> None:
    """FORWARD without Docker's jump to DOCKER-USER (Docker before 28 deletes it at every network
    it creates; an old dockerd that found DOCKER-USER already there did not add it) still
    reaches fwsync through its own FORWARD jump: no moment open, nothing to repair. That jump
    deleted is drift, repaired."""
    lab = make_docker_lab()
    lab.run_web("web-1", {"80/tcp": 6000, "81/tcp": 7000})
    daemons(lab, write_rules(tmp_path, OFFICE))
    assert lab.attacker.probe(6000) == "filtered"

    lab.host.run(["iptables", "-D", "FORWARD", "-j", "DOCKER-USER"])
    assert lab.attacker.probe(6000) == "filtered" and lab.trusted.probe(7000) == "open"
    lab.host.run(["iptables", "-D", "FORWARD", "-j", "FWSYNC-FORWARD"])
    took = seconds_until(lambda: "-A FORWARD -j FWSYNC-FORWARD" in lab.host.run(
        ["iptables", "-S", "FORWARD"]).stdout, REQUIRED, "FORWARD → fwsync")
    assert took <= REQUIRED, f"repaired after {took:.2f} s"
    assert lab.attacker.probe(6000) == "filtered" and lab.trusted.probe(7000) == "open"


def listed_table(lab: DockerLab) -> str:
    """fwsync's table as nft lists it, its rules' counters left out (traffic moves them, and a
    table written again after a flush counts from zero: core/counts)."""
    res = lab.host.run(["nft", "list", "table", "inet", "fwsync"], check=False)
    return re.sub(r" packets \d+ bytes \d+", "", res.stdout) if res.returncode == 0 else ""


def test_flushed_nftables_table_is_repaired_within_2s(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    dlab.run_web("web-1", {"80/tcp": 6000, "81/tcp": 7000})
    d = daemons(dlab, write_rules(tmp_path, OFFICE), "--backend", "nftables")
    assert dlab.attacker.probe(6000) == "filtered" and dlab.trusted.probe(7000) == "open"

    def table() -> str:
        return listed_table(dlab)
    held = table()
    assert "default deny" in held
    for damage in (["flush", "table", "inet", "fwsync"], ["delete", "table", "inet", "fwsync"]):
        dlab.host.run(["nft", *damage])
        took = seconds_until(lambda: table() == held, REQUIRED, f"`nft {' '.join(damage)}`")
        assert took <= REQUIRED, f"`nft {' '.join(damage)}` repaired after {took:.2f} s"
        assert dlab.attacker.probe(6000) == "filtered" and dlab.trusted.probe(7000) == "open"
    assert state(d)["drift_repairs"] == 2
    assert all(r.get("backend") == "nftables" for r in d.reconciles())


def test_nftables_table_flushed_while_the_rules_are_invalid_is_repaired(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    """Started on invalid rules, the daemon keeps what the kernel holds and puts it back when
    it drifts: with nftables too, whose apply writes JSON objects that no rules file gave it
    this time (they come from the kernel's own listing). The office, which the last good policy
    keeps off port 6000, must stay off it after the table was flushed."""
    dlab.run_web("web-1", {"80/tcp": 6000, "81/tcp": 7000})
    rules = write_rules(tmp_path, "default deny incoming\ndefine office 198.51.100.0/25\n"
                                  "allow from $office to any port 7000 proto tcp\n")
    fwsync_ok(dlab, "apply", "--backend", "nftables", rules=rules)
    assert dlab.trusted.probe(6000) == "filtered" and dlab.trusted.probe(7000) == "open"

    def table() -> str:
        return listed_table(dlab)
    held = table()
    (rules / "10-test.rules").write_text("allow from $nowhere to any port 6000\n")
    d = daemons(dlab, rules, "--backend", "nftables")
    start = d.reconciles()[0]
    assert start["result"] == "invalid-rules" and start["policy"] == "kernel", start
    before = len(d.reconciles())
    dlab.host.run(["nft", "flush", "table", "inet", "fwsync"])
    took = seconds_until(lambda: table() == held, REQUIRED, "the flushed table put back")
    assert took <= REQUIRED, f"repaired after {took:.2f} s"
    repair = d.wait_reconcile(lambda r: bool(r.get("drift")), after=before)
    assert repair["result"] == "invalid-rules" and repair["policy"] == "kernel", repair
    assert "error" not in repair, repair
    assert dlab.trusted.probe(6000) == "filtered", "the office stays off 6000"
    assert dlab.trusted.probe(7000) == "open" and dlab.attacker.probe(7000) == "filtered"
    assert not [r for r in d.reconciles() if r["result"] == "error"], d.tail()


def test_dockerd_killed_and_restarted_policy_enforced_again(
        make_docker_lab: Callable[..., DockerLab], tmp_path: Path,
        daemons: StartDaemon) -> None:
    lab = make_docker_lab()
    lab.run_web("web-db", {"80/tcp": 5000}, restart_policy="always")
    lab.run_web("web-tmp", {"80/tcp": 5100})  # no restart policy: gone after the restart
    d = daemons(lab, write_rules(tmp_path, OFFICE))
    assert lab.trusted.probe(5000) == "open" and lab.trusted.probe(5100) == "open"
    assert lab.attacker.probe(5000) == "filtered"

    containerd = Path("/proc") / (lab.dir / "exec/containerd/containerd.pid").read_text().strip()
    with TightLoop(lab.attacker, [5000, 5100]) as attacker:
        assert lab.pid is not None
        os.kill(lab.pid, signal.SIGKILL)  # the containers keep running, published, meanwhile
        lab.stop_dockerd()  # the lab's bookkeeping (the pid is gone already)
        d.wait_for(lambda r: "event stream ended" in r.get("msg", "")
                   or "cannot reach Docker" in r.get("msg", ""), what="Docker gone")
        # dockerd's own containerd dies with it; a new dockerd only starts once it is reaped.
        seconds_until(lambda: not containerd.exists(), 10, "the old containerd gone")
        while_down = attacker.stop()
    assert all(s["open"] == 0 for s in while_down.values()), while_down
    assert lab.trusted.probe(5000) == "open", "Docker away: the office still gets in"

    # Docker away: fwsync keeps enforcing, drift repairs included.
    lab.host.run(["iptables", "-F", "DOCKER-USER"])
    took = seconds_until(lambda: fwsync_jump(lab), REQUIRED, "repaired without Docker")
    assert took <= REQUIRED

    with TightLoop(lab.attacker, [5000, 5100]) as attacker:
        before = len(d.reconciles())
        lab.start_dockerd()
        # The reconnect may share its reconcile with a drift tick (dockerd re-inserting its
        # jump while it starts): "drift: ipv4 jump, reconnect: ...", whatever the machine's speed.
        back = d.wait_reconcile(lambda r: "reconnect" in r["trigger"], after=before,
                                what="the re-list after dockerd came back")
        wait_for(lab.trusted, lab.trusted.host_v4, 5000, timeout=30)
        across_restart = attacker.stop()
    assert all(s["open"] == 0 for s in across_restart.values()), across_restart
    assert "re-listing" in back["trigger"]
    assert lab.attacker.probe(5000) == "filtered", "web-db is back, still for the office only"
    # web-tmp's rule was for a container that did not come back: the re-list took it out.
    saved = lab.host.run(["iptables-save", "-t", "filter"]).stdout
    assert "--ctorigdstport 5100" not in saved
    assert "--ctorigdstport 5000" in saved
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=d.rules,
                      env=d.env).returncode == 0


# --------------------------------------------------------------------------- rules


def test_invalid_edit_keeps_the_last_good_policy_and_is_reported(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    rules = write_rules(tmp_path, OFFICE)
    dlab.run_web("web-3", {"80/tcp": 7000, "81/tcp": 6000})
    d = daemons(dlab, rules)
    assert dlab.trusted.probe(7000) == "open" and dlab.attacker.probe(7000) == "filtered"
    before_edit = ruleset_snapshot(dlab)
    before = len(d.reconciles())

    (rules / "10-test.rules").write_text(OFFICE + "allow from $nowhere to any port 6000\n")
    bad = d.wait_reconcile(lambda r: r["result"] == "invalid-rules", after=before)
    where = f"{rules}/10-test.rules:5:12: error: unknown set '$nowhere'"
    assert bad["diagnostics"][0].startswith(where)
    assert any(r.get("level") == "error" and r["msg"].startswith(where) for r in d.records())
    assert bad["policy"] == "last good rules"
    assert ruleset_snapshot(dlab) == before_edit, "nothing of the invalid edit is in the kernel"
    assert dlab.trusted.probe(7000) == "open" and dlab.attacker.probe(6000) == "filtered"
    last = state(d)["last_reconcile"]
    assert isinstance(last, dict) and last["result"] == "invalid-rules"
    assert last["diagnostics"][0].startswith(where)

    # While the file stays invalid, the last good policy follows Docker: a new web-* container
    # is governed (reachable for the office only) ...
    dlab.run_web("web-4", {"80/tcp": 7001}, wait=False)
    seconds_until(reachable(dlab.trusted, 7001), REQUIRED, "web-4 under the last good policy")
    assert dlab.attacker.probe(7001) == "filtered"
    # ... and drift is still repaired.
    dlab.host.run(["iptables", "-F", "DOCKER-USER"])
    seconds_until(lambda: fwsync_jump(dlab), REQUIRED, "repaired while the rules are invalid")
    assert dlab.attacker.probe(7000) == "filtered"

    (rules / "10-test.rules").write_text(OFFICE)
    fixed = d.wait_reconcile(lambda r: r["result"] in ("applied", "unchanged")
                             and r["trigger"].startswith("rules"), after=before)
    assert fixed["policy"] == "rules"
    status = fwsync_ok(dlab, "status", rules=rules, env=d.env).stdout
    assert f"Daemon: running (pid {d.pid}" in status
    assert "last reconcile" in status


def test_a_list_outside_the_rules_dir_is_followed_and_sighup_reloads(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    outside = tmp_path / "lists" / "office.txt"  # a `define ... file` list, not in the rules dir
    outside.parent.mkdir()
    outside.write_text("198.51.100.0/25\n")
    rules = write_rules(tmp_path, f"default deny incoming\ndefine office file {outside}\n"
                                  "allow from $office to any port 5432 proto tcp\n")
    dlab.run_web("db", {"80/tcp": 5432})
    d = daemons(dlab, rules)
    assert dlab.attacker.probe(5432) == "filtered"
    before = len(d.reconciles())
    outside.write_text("198.51.100.0/25\n203.0.113.0/25\n")
    t0 = time.monotonic()
    rec = d.wait_reconcile(lambda r: r["result"] == "applied", after=before)
    assert dlab.attacker.probe(5432) == "open"
    assert time.monotonic() - t0 < 2.0, f"the list change took {time.monotonic() - t0:.1f} s"
    assert "rules" in rec["trigger"], rec

    # SIGHUP, on its own: the new list has the same size, and its mtime is put back, so the
    # drift tick's fingerprint (size, mtime, inode) cannot see the change, and no watcher
    # looks outside the rules directory. Only the signal can make the daemon read it.
    seen, unchanged = outside.stat(), fingerprint(rules, [outside])
    outside.write_text("198.51.100.0/25\n203.0.113.8/29\n")  # the attacker's .7 is out
    os.utime(outside, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    assert fingerprint(rules, [outside]) == unchanged
    before = len(d.reconciles())
    d.signal(signal.SIGHUP)
    rec = d.wait_reconcile(lambda r: r["result"] == "applied", after=before)
    assert rec["trigger"] == "signal: SIGHUP", rec
    assert [r["trigger"] for r in d.reconciles()[before:]] == ["signal: SIGHUP"]
    assert dlab.attacker.probe(5432) == "filtered" and dlab.trusted.probe(5432) == "open"


# --------------------------------------------------------------------------- lifecycle


def test_sigterm_exits_0_and_leaves_the_rules_enforced(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    rules = write_rules(tmp_path, OFFICE)
    dlab.run_web("web-5", {"80/tcp": 7000, "81/tcp": 6000})
    d = daemons(dlab, rules)
    enforced = ruleset_snapshot(dlab)
    assert fwsync_jump(dlab)
    status = fwsync_ok(dlab, "status", rules=rules, env=d.env).stdout
    assert f"Daemon: running (pid {d.pid}" in status and "Docker events followed" in status

    assert d.stop() == 0, d.tail()
    assert ruleset_snapshot(dlab) == enforced, "SIGTERM took nothing out"
    assert dlab.trusted.probe(7000) == "open"
    assert dlab.attacker.probe(7000) == "filtered" and dlab.attacker.probe(6000) == "filtered"
    assert any("rules are still enforced" in r.get("msg", "") for r in d.records())
    status = fwsync_ok(dlab, "status", rules=rules, env=d.env).stdout
    assert "Daemon: not running (pid" in status
    data = json.loads(fwsync_ok(dlab, "status", "--format", "json", rules=rules,
                                env=d.env).stdout)
    assert data["daemon"]["running"] is False and data["daemon"]["stopped"]


def _scrape(lab: DockerLab, url: str) -> str:
    code = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5)" \
           ".read().decode())"
    return lab.host.run([sys.executable, "-I", "-c", code, url]).stdout


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] \
                == name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")


def test_metrics_endpoint_serves_the_counters(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    port = 19817
    rules = write_rules(tmp_path, OFFICE)
    d = daemons(dlab, rules, "--metrics-address", f"127.0.0.1:{port}")
    dlab.run_web("web-6", {"80/tcp": 7000})
    rec = d.wait_for(lambda r: r.get("msg") == "reconcile" and "start web-6" in r["trigger"])
    dlab.host.run(["iptables", "-F", "DOCKER-USER"])
    d.wait_for(lambda r: r.get("msg") == "reconcile" and bool(r.get("drift")))
    text = _scrape(dlab, f"http://127.0.0.1:{port}/metrics")
    assert _sample(text, 'fwsync_reconciles_total{result="applied"}') >= 2
    assert _sample(text, 'fwsync_triggers_total{source="docker"}') >= 1
    assert _sample(text, "fwsync_drift_repairs_total") >= 1
    assert _sample(text, "fwsync_governed_published_ports") == rec["ports"] == 2
    assert _sample(text, "fwsync_event_to_enforced_seconds_count") >= 1
    assert _sample(text, "fwsync_reconcile_duration_seconds_count") >= 3
    assert _sample(text, "fwsync_rules_valid") == 1
    assert _sample(text, "fwsync_docker_connected") == 1
    assert 'fwsync_errors_total' in text
    assert _sample(text, "process_resident_memory_bytes") > 0
    # The kernel's answer after the repair, as `fwsync status` gives it from its own reads.
    status = json.loads(fwsync_ok(dlab, "status", "--format", "json", rules=rules,
                                  env=d.env).stdout)
    assert status["in_sync"] is True and status["enforcing"].startswith("yes")
    assert _sample(text, 'fwsync_enforcing{family="4"}') == 1
    assert _sample(text, 'fwsync_enforcing{family="6"}') == 1
    assert _sample(text, "fwsync_in_sync") == 1
    policy = load_rules(rules).policy
    assert policy is not None
    info = [line for line in text.splitlines() if line.startswith("fwsync_rules_info{")]
    assert len(info) == 1 and f'digest="{policy.digest}"' in info[0] \
        and 'commit=""' in info[0] and info[0].endswith(" 1.0"), info
    # Off by default: no other daemon listens.
    assert run_fwsync(dlab, "daemon", "--metrics-address", "nonsense").returncode == 1


class NotifySocket:
    """A real unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))

    def wait(self, pred: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _at, msg in list(self.messages):
                if pred(msg):
                    return msg
            time.sleep(0.02)
        raise LabError(f"no such notification in {timeout} s: {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_sd_notify_ready_watchdog_and_stopping_on_a_real_socket(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon) -> None:
    run_fwsync(dlab, "remove")  # nothing of fwsync's in the kernel: READY must wait for rules
    notify = NotifySocket(dlab.dir / "notify.sock")
    try:
        rules = write_rules(tmp_path, "this is not a rule\n")
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
        d = daemons(dlab, rules, env=env, ready=False, docker=False)
        waiting = notify.wait(lambda m: "NOT enforcing" in m)
        assert not any("READY=1" in m for _, m in notify.messages), \
            "not ready while no rules are enforced (Docker would wait)"
        assert "10-test.rules:1:1: error" in waiting
        (rules / "10-test.rules").write_text(OFFICE)
        ready = notify.wait(lambda m: "READY=1" in m)
        assert fwsync_jump(dlab), "READY=1 only once the rules are in the kernel"
        assert "STATUS=enforcing (iptables)" in ready
        notify.wait(lambda m: m == "WATCHDOG=1")
        assert d.stop() == 0
        notify.wait(lambda m: "STOPPING=1" in m)
    finally:
        notify.close()


# --------------------------------------------------------------------------- boot


def _as_after_a_reboot(lab: DockerLab) -> None:
    """The kernel as at boot: no Docker chains, no fwsync objects, forwarding off."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            lab.host.run([tool, "-t", table, "-F"])
            lab.host.run([tool, "-t", table, "-X"])
        lab.host.run([tool, "-P", "FORWARD", "ACCEPT"])
    lab.host.run(["ipset", "destroy"], check=False)
    lab.host.set_sysctls({"net.ipv4.ip_forward": 0})


def _unit_exec_start_pre() -> list[list[str]]:
    unit = (REPO / "systemd" / "fwsync.service").read_text()
    return [shlex.split(line.split("=", 1)[1].lstrip("-@:+!"))
            for line in unit.splitlines() if line.startswith("ExecStartPre=")]


def test_boot_order_leaves_no_window(make_docker_lab: Callable[..., DockerLab],
                                     tmp_path: Path, daemons: StartDaemon) -> None:
    """As systemd/fwsync.service orders it at boot: its ExecStartPre, the daemon ready with
    Docker down, then dockerd restarting containers that publish denied ports."""
    lab = make_docker_lab()
    for i in range(3):
        lab.run_web(f"web-b{i}", {"80/tcp": 6000 + i, "81/tcp": 7000 + i},
                    restart_policy="always")
    lab.stop_dockerd()
    _as_after_a_reboot(lab)
    pre = _unit_exec_start_pre()
    assert pre, "the unit prepares DOCKER-USER before Docker starts"
    for argv in pre:
        lab.host.run(argv)
    d = daemons(lab, write_rules(tmp_path, OFFICE), docker=False)
    with TightLoop(lab.attacker, [6000, 6001, 6002, 7000]) as attacker:
        lab.start_dockerd()
        wait_for(lab.trusted, lab.trusted.host_v4, 7000, timeout=30)  # a container rule
        time.sleep(0.5)
        seen = attacker.stop()
    assert all(s["open"] == 0 for s in seen.values()), seen
    assert all(s["filtered"] > 0 for s in seen.values()), "the ports were published meanwhile"
    assert fwsync_jump(lab)
    assert d.reconciles()[0]["docker_error"].startswith("cannot reach Docker")


def test_a_refused_attempt_on_a_real_dockers_published_port_is_logged(
        dlab: DockerLab, tmp_path: Path, daemons: StartDaemon, backend: str) -> None:
    """Issue 20 on each engine (the kernel lab has the rest, tests/kernel/test_logging.py): the
    attacker's refused attempt on a port Docker published appears in `fwsync log` with the
    published port, the container and the rule; the office's allowed one does not."""
    rules = write_rules(tmp_path, OFFICE + "logging low\n")
    d = daemons(dlab, rules, "--backend", backend)
    dlab.run_web("web-log", {"80/tcp": 6100})
    d.wait_for(lambda r: r.get("msg") == "reconcile" and "start web-log" in r["trigger"])
    assert dlab.attacker.probe(6100, timeout=0.5) == "filtered"
    assert dlab.trusted.probe(6100) == "open"

    def logged() -> list[dict[str, object]]:
        res = run_fwsync(dlab, "log", "--format", "json", env=d.env)
        return [json.loads(line) for line in res.stdout.splitlines()]

    seconds_until(lambda: len(logged()) >= 1, REQUIRED, "the refused attempt logged")
    got = logged()  # run_web's own readiness probes from the attacker may be among them
    assert got and all(g["src"] == dlab.attacker.v4 for g in got), got
    last = got[-1]
    assert (last["port"], last["container"], last["verdict"]) == (6100, "web-log", "deny"), last
    assert str(last["origin"]).endswith("10-test.rules:1"), last  # default deny incoming
