"""`fwsync status`'s "Enforcing" against real packets, in the states known to let packets bypass
fwsync (and in look-alike states that do not). Yes must mean the attacker is kept out; a
bypass must be a NO, with why, and show up in `plan` as drift that `apply` repairs."""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fwsync.core.observed import DockerNetwork, DockerState, PublishedPort
from fwsync.observe.memory import remember
from tests.daemon_helpers import DaemonProc
from tests.kernel.test_nodnat import OFFICE_RULES, PROXIED, apply_seeing
from tests.lab import KernelLab, run_fwsync, serve_tcp, wait_for
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

RULES = "allow from 198.51.100.0/25 to any port 5432\n"
OTHER = {"nft": "legacy", "legacy": "nft"}


def _status(lab: KernelLab, rules: Path) -> str:
    out = fwsync_ok(lab, "status", "--format", "json", rules=rules).stdout
    enforcing = json.loads(out)["enforcing"]
    assert isinstance(enforcing, str)
    return enforcing


# (what is done to the kernel after apply, whether fwsync is still reached first). fwsync jumps
# from FORWARD (first) and from DOCKER-USER: either reaches it while the other is gone.
DOCKER_REINSERTS = [["-D", "FORWARD", "-j", "DOCKER-USER"], ["-I", "FORWARD", "-j", "DOCKER-USER"]]
IPTABLES_STATES = {
    "accept-above-the-jump": ([["-I", "FORWARD", "1", "-p", "tcp", "-j", "ACCEPT"]], False),
    "jump-deleted": ([["-D", "DOCKER-USER", "-j", "FWSYNC-FORWARD"]], True),
    "both-jumps-deleted": ([["-D", "DOCKER-USER", "-j", "FWSYNC-FORWARD"],
                            ["-D", "FORWARD", "-j", "FWSYNC-FORWARD"]], False),
    "docker-user-jump-missing": ([["-D", "FORWARD", "-j", "DOCKER-USER"]], True),
    "accept-in-docker-user-first": ([["-I", "DOCKER-USER", "1", "-j", "ACCEPT"]], True),
    # Docker 20.10 put its jump back on top (a network created): DOCKER-USER comes first again.
    "accept-in-docker-user-first-and-on-top": (
        [*DOCKER_REINSERTS, ["-I", "DOCKER-USER", "1", "-j", "ACCEPT"]], False),
    "drop-above-the-jump": ([["-I", "FORWARD", "1", "-s", "192.0.2.1", "-j", "DROP"]], True),
    "accept-below-the-jump": ([["-A", "DOCKER-USER", "-j", "ACCEPT"]], True),
}


@pytest.mark.parametrize("state", list(IPTABLES_STATES))
def test_iptables_enforcing_is_what_packets_see(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        state: str) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert _status(lab, rules).startswith("yes") and lab.attacker.probe(5432) == "filtered"

    edits, reached = IPTABLES_STATES[state]
    for edit in edits:
        lab.iptables(*edit)
    seen = lab.attacker.probe(5432)
    assert seen == ("filtered" if reached else "open"), f"the state is not what it claims: {seen}"
    enforcing = _status(lab, rules)
    assert enforcing.startswith("yes") == reached, enforcing
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    if reached:
        assert "not reached" not in plan.stdout, plan.stdout
        return
    assert enforcing.startswith("NO: packets bypass") and "IPv4" in enforcing, enforcing
    assert plan.returncode == 2 and "ipv4 jump" in plan.stdout, plan.stdout
    fwsync_ok(lab, "apply", rules=rules)
    assert _status(lab, rules).startswith("yes") and lab.attacker.probe(5432) == "filtered"


@pytest.mark.parametrize("accept_in", ["other", "own"])
def test_iptables_nft_and_legacy_rulesets_both_present(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        accept_in: str) -> None:
    """Both iptables variants hold a FORWARD chain: each is a hook of its own, and an ACCEPT
    in the one fwsync does not use is not final, so fwsync still decides; an ACCEPT above the
    jump in the one it uses bypasses it."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    variant = OTHER[lab.variant] if accept_in == "other" else lab.variant
    lab.host.run([f"iptables-{variant}", "-w", "-I", "FORWARD", "1", "-j", "ACCEPT"])
    if accept_in == "other":
        assert "-A FORWARD -j ACCEPT" in lab.host.run([f"iptables-{variant}-save"]).stdout
    reached = accept_in == "other"
    assert lab.attacker.probe(5432) == ("filtered" if reached else "open")
    enforcing = _status(lab, rules)
    assert enforcing.startswith("yes") == reached, enforcing
    assert lab.trusted.probe(5432) == "open"


NFT_STATES = {
    "forward-chain-deleted": ([["flush", "chain", "inet", "fwsync", "forward"],
                               ["delete", "chain", "inet", "fwsync", "forward"]], False),
    "forward-chain-flushed": ([["flush", "chain", "inet", "fwsync", "forward"]], False),
    "rules-flushed": ([["flush", "chain", "inet", "fwsync", "inbound"]], False),
    "accept-in-an-earlier-table": ([
        ["add", "table", "inet", "early"],
        ["add", "chain", "inet", "early", "pass", "{ type filter hook forward priority -10 ; }"],
        ["add", "rule", "inet", "early", "pass", "accept"]], True),
}


@pytest.mark.parametrize("state", list(NFT_STATES))
def test_nftables_enforcing_is_what_packets_see(
        make_kernel_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        state: str) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert _status(lab, rules).startswith("yes") and lab.attacker.probe(5432) == "filtered"

    edits, reached = NFT_STATES[state]
    for edit in edits:
        lab.host.run(["nft", *edit])
    seen = lab.attacker.probe(5432)
    assert seen == ("filtered" if reached else "open"), f"the state is not what it claims: {seen}"
    enforcing = _status(lab, rules)
    assert enforcing.startswith("yes") == reached, enforcing
    if not reached:
        plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
        assert plan.returncode == 2, plan.stdout
        fwsync_ok(lab, "apply", rules=rules)
        assert _status(lab, rules).startswith("yes") and lab.attacker.probe(5432) == "filtered"
    lab.host.run(["nft", "delete", "table", "inet", "early"], check=False)


def test_nftables_flushed_input_chain_is_not_enforcing(
        make_kernel_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        ) -> None:
    """docker-proxy's IPv6 port (a container without IPv6) is judged in fwsync's input chain:
    flushed, the attacker reaches it, and `status` must say so."""
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(8080, 80, host_ip="0.0.0.0")  # IPv4 only: IPv6 goes to the proxy stand-in
    rules = write_rules(tmp_path, OFFICE_RULES)
    with serve_tcp(lab.host, [8080]):
        wait_for(lab.attacker, lab.attacker.host_v6, 8080)
        apply_seeing(lab, rules, "nftables", PROXIED)
        assert lab.attacker.probe(8080, v6=True) == "filtered"
        assert _status(lab, rules).startswith("yes")

        lab.host.run(["nft", "flush", "chain", "inet", "fwsync", "input"])
        assert lab.attacker.probe(8080, v6=True) == "open", "the state is not what it claims"
        enforcing = _status(lab, rules)
        assert enforcing.startswith("NO: packets bypass") and "input" in enforcing, enforcing


# Runs inside HOST: what `auto` makes of the kernel when Docker answers (the lab has no dockerd)
# as 20.10 does, without naming its firewall backend.
_AUTO = r"""
import sys
from pathlib import Path
from fwsync.core.observed import DockerState
from fwsync.reconcile import make_plan
planned = make_plan(Path(sys.argv[1]), "auto", docker=DockerState(version="20.10.24"))
reach = planned.backend.enforcement()
print(planned.backend.name, "in-sync" if planned.plan.empty else "changes", reach.enforcing)
"""


def test_auto_finds_fwsyncs_nftables_table(
        make_kernel_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        ) -> None:
    """After `apply --backend nftables`, every command run with the default backend (`auto`)
    must find fwsync's table where it is: not 'not applied' (and a plan to switch back to
    iptables) because Docker writes iptables."""
    monkeypatch.delenv("FWSYNC_BACKEND", raising=False)
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", "--backend", "nftables", rules=rules)
    assert lab.attacker.probe(5432) == "filtered"
    res = lab.host.run([sys.executable, "-c", _AUTO, str(rules)], check=False,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                            "PYTHONPATH": str(Path(__file__).parents[2]),
                            "FWSYNC_DOCKER_STATE": str(lab.dir / "docker.json")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["nftables", "in-sync", "True"], res.stdout


_DOCTOR = r"""
from fwsync.doctor.checks import check_enforcement
from fwsync.doctor.run import read_enforcement
reach = read_enforcement()
print(reach is not None and reach.enforcing, [f.message for f in check_enforcement(reach)])
"""


def test_doctor_says_fwsync_holding_nothing_is_not_enforcing(kernel_lab: KernelLab) -> None:
    """doctor's enforcement fact, read from a kernel where fwsync holds nothing: an answer (not
    enforcing), where it was skipped and doctor stayed silent."""
    res = kernel_lab.host.run([sys.executable, "-c", _DOCTOR], check=False,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                   "PYTHONPATH": str(Path(__file__).parents[2])})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("False ['fwsync is not enforcing: it holds nothing"), res.stdout


def test_apply_asks_the_kernel_before_saying_enforced(
        make_kernel_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        ) -> None:
    """Another program writes the moment fwsync's transaction is in (a `ufw reload` or a dockerd
    start racing the apply; here a wrapper around iptables-restore, so the timing is certain):
    an ACCEPT first in FORWARD. apply must read the kernel back and say NO, with why, and exit
    non-zero — not print "fwsync's rules are enforced"."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    res = run_fwsync(lab, "apply", rules=rules, env={"PATH": _racing_restore(lab, tmp_path)})
    assert lab.attacker.probe(5432) == "open", "the state is not what it claims"
    assert "fwsync's rules are enforced" not in res.stdout, res.stdout
    assert res.returncode == 1, res.stdout + res.stderr
    assert "NOT enforced" in res.stderr and "-A FORWARD -p tcp -j ACCEPT" in res.stderr, \
        res.stderr

    fwsync_ok(lab, "apply", rules=rules)  # without the racing writer: repaired, and said so
    assert lab.attacker.probe(5432) == "filtered"


def _racing_restore(lab: KernelLab, tmp_path: Path) -> str:
    """A PATH whose iptables-restore is the real one followed by another program's write: an
    ACCEPT first in FORWARD, the moment fwsync's transaction is in (a `ufw reload` or a
    dockerd start racing fwsync; a wrapper makes the timing certain)."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    restore = lab.tool("iptables-restore")
    (shim / restore).write_text(
        f"#!/bin/sh\n/usr/sbin/{restore} \"$@\" || exit $?\n"
        f"exec /usr/sbin/{lab.tool('iptables')} -w -I FORWARD 1 -p tcp -j ACCEPT\n")
    (shim / restore).chmod(0o755)
    return f"{shim}:/usr/sbin:/usr/bin:/sbin:/bin"


def test_the_daemons_systemd_status_is_the_kernels_answer(
        make_kernel_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """STATUS= (what `systemctl status fwsync` shows) says enforcing only when the kernel, read
    back after the reconcile, says so: not because the reconcile succeeded."""
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    path = lab.dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    env = {"NOTIFY_SOCKET": str(path), "PATH": _racing_restore(lab, tmp_path)}
    try:
        with DaemonProc(lab, rules, "--backend", "iptables", "--drift-interval", "0.5",
                        env=env) as daemon:
            daemon.wait_reconcile(lambda r: r.get("result") == "applied")
            # The daemon and the writer fight on: a SYN can meet the moment fwsync's jump is
            # first, so the attacker gets in at some moment, not at every probe (a probe sends
            # one SYN: PROBE_TIMEOUT is the first retransmission's).
            wait_for(lab.attacker, lab.attacker.host_addr(), 5432, want="open", timeout=10)
            statuses: list[str] = []
            deadline = time.monotonic() + 30
            # The daemon and the racing writer fight on: STATUS= keeps coming; stop at the
            # first that reports an apply, or fail after 30 s (the socket's timeout bounds one
            # silent wait, not a stream of other messages).
            while not any("last: applied" in s for s in statuses):
                assert time.monotonic() < deadline, f"no STATUS= after an apply: {statuses[-3:]}"
                statuses += [line for line in sock.recv(65536).decode().splitlines()
                             if line.startswith("STATUS=")]
    finally:
        sock.close()
    applied = next(s for s in statuses if "last: applied" in s)
    assert applied.startswith("STATUS=NOT enforcing (iptables); last: applied"), statuses
    assert "-A FORWARD -p tcp -j ACCEPT" in applied, applied


# A bypass inside fwsync's own forward chain: its jumps are all in place (reached), yet a
# RETURN / accept put first lets everyone on. Only reading fwsync's own rules back, as the
# kernel lists them, and evaluating them (fwsync.verify) can tell: issue 18, item 6.
OWN_CHAIN_BYPASS = {
    "iptables": ["-I", "FWSYNC-FORWARD", "1", "-j", "RETURN"],
    "nftables": ["insert", "rule", "inet", "fwsync", "forward", "accept"],
}
DB = DockerState(ports=(PublishedPort("0.0.0.0", 5432, "tcp", "db", 80),
                        PublishedPort("::", 5432, "tcp", "db", 80)),
                 networks=(DockerNetwork("bridge", "docker0", subnets=("172.17.0.0/16",)),))


@pytest.mark.parametrize("name", list(OWN_CHAIN_BYPASS))
def test_a_bypass_inside_fwsyncs_own_chain_is_not_enforcing(
        make_kernel_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        name: str) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", name)
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    # The lab has no dockerd: fwsync takes the bindings from what Docker last reported.
    assert remember(replace(DB, seen_at=time.time()), lab.dir / "docker.json") is None
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert _status(lab, rules).startswith("yes") and lab.attacker.probe(5432) == "filtered"

    edit = OWN_CHAIN_BYPASS[name]
    if name == "iptables":
        lab.iptables(*edit)
    else:
        lab.host.run(["nft", *edit])
    assert lab.attacker.probe(5432) == "open", "the state is not what it claims"
    enforcing = _status(lab, rules)
    assert enforcing.startswith("NO: fwsync's rules, as the kernel holds them, give other "
                               "verdicts than the policy"), enforcing
    assert "0.0.0.0:5432/tcp db: policy deny, kernel allow" in enforcing, enforcing
    # explain asks the kernel too, for this one connection: the rules deny, the kernel allows.
    said = json.loads(fwsync_ok(lab, "explain", lab.attacker.v4, "5432/tcp", "--to",
                                lab.attacker.host_v4, "--format", "json", rules=rules).stdout)
    assert said["verdict"] == "deny" and said["reaches"][0]["kernel"] == "allow", said
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert plan.returncode == 2, plan.stdout
    fwsync_ok(lab, "apply", rules=rules)
    assert _status(lab, rules).startswith("yes") and lab.attacker.probe(5432) == "filtered"
    said = json.loads(fwsync_ok(lab, "explain", lab.attacker.v4, "5432/tcp", "--format", "json",
                                rules=rules).stdout)
    assert said["reaches"][0]["kernel"] == "deny", said
