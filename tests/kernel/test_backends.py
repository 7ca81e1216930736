"""fwsync's backends in a real kernel, judged by real packets from the trusted and attacker
namespaces. Each test runs for both backends (iptables, nftables) on each KernelLab of
conftest.KERNEL_LABS: both iptables variants Docker may use (nft, legacy) under Docker 20.10's
chain layout, and iptables-nft under 28's (DOCKER-FORWARD, raw-table drops, DOCKER-USER without
RETURN). Docker's rules are the KernelLab's hand-written copy (compared with the real engines by
tests/e2e/test_testbed.py); the e2e suite repeats the essentials against real dockerds, and
test_docker29.py covers Docker 29's nftables tables."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fwsync.core.ruleset import LIMIT
from tests.lab import (
    CTR_NET_V4,
    CTR_V4,
    HOST_ATTACKER_V4,
    KernelLab,
    ruleset_snapshot,
    run_fwsync,
)
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel


SEED_RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 5432 proto tcp   comment 'postgres for the office'
reject from 203.0.113.0/25 to any port 2222
allow 53/udp
"""


def apply(lab: KernelLab, rules: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return fwsync_ok(lab, "apply", *extra, rules=rules)


def publish_seed(lab: KernelLab) -> None:
    lab.publish(5432, 80)
    lab.publish(2222, 81)
    lab.publish(53, 80, "udp")


def test_seed_policy_verdicts_with_real_packets(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    publish_seed(lab)
    # The gotcha: published means reachable by everyone, over both families.
    assert lab.attacker.probe(5432) == "open"
    assert lab.attacker.probe(5432, v6=True) == "open"

    apply(lab, write_rules(tmp_path, SEED_RULES))

    for v6 in (False, True):
        assert lab.trusted.probe(5432, v6=v6) == "open", "the office keeps postgres"
        assert lab.attacker.probe(5432, v6=v6) == "filtered", "deny drops silently"
        assert lab.trusted.probe(2222, v6=v6) == "filtered", "default deny"
        assert lab.trusted.probe(53, "udp", v6=v6) == "open"
        assert lab.attacker.probe(53, "udp", v6=v6) == "open"
    assert lab.attacker.probe(2222) == "closed", "reject answers with a TCP reset"
    assert lab.attacker.probe(2222, v6=True) == "filtered", "the reject rule is IPv4-only"


def test_port_lists_and_ranges_with_real_packets(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """A port list is one rule with a port set in nftables (one lookup), and must still
    match exactly the listed ports and ranges, overlapping items included."""
    lab = kernel_lab
    for port in (81, 8050, 8100, 8101, 9000):
        lab.publish(port, 80)
    apply(lab, write_rules(tmp_path, "allow 81,8000:8100,8050/tcp\n"))
    expected = {81: "open", 8050: "open", 8100: "open", 8101: "filtered", 9000: "filtered"}
    got = {port: lab.attacker.probe(port) for port in expected}
    assert got == expected
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=tmp_path / "rules")
    assert plan.returncode == 0, plan.stdout


LINEAR_RULES = """\
allow from 203.0.113.99 to any port 5432 proto tcp
allow from 198.51.100.0/25 to any port 5432 proto tcp
allow from 198.51.100.64/26 to any port 5432 proto tcp
reject from 203.0.113.7 to any port 5432 proto tcp
allow from 203.0.113.7 to any port 5432 proto tcp
allow from 203.0.113.98 to any port 8050 proto tcp
allow from 203.0.113.7 to any port 8050 proto tcp
"""


def test_neighbouring_rules_with_one_verdict_keep_their_meaning(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """nftables merges neighbours that differ only in their source into one set lookup
    (overlapping sources included); a rule with another verdict in between must still win."""
    lab = kernel_lab
    lab.publish(5432, 80)
    lab.publish(8050, 80)
    rules = write_rules(tmp_path, LINEAR_RULES)
    apply(lab, rules)
    got = {(who, port): peer.probe(port) for who, peer in (("trusted", lab.trusted),
                                                         ("attacker", lab.attacker))
           for port in (5432, 8050)}
    assert got == {("trusted", 5432): "open", ("attacker", 5432): "closed",
                   ("trusted", 8050): "filtered", ("attacker", 8050): "open"}
    if backend == "nftables":
        listing = lab.host.run(["nft", "list", "chain", "inet", "fwsync", "inbound"]).stdout
        # 3 rules → 1 set, 2 rules → 1 set; a set with single addresses and networks is
        # looked up in its two parts (a hash set and an interval set), one rule each.
        merged = {word.split("_v4")[0] for word in listing.split() if word.startswith("@src.")}
        assert len(merged) == 2, listing
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0


def test_plan_after_apply_shows_no_changes(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    rules = write_rules(tmp_path, SEED_RULES + "limit 2222/tcp\nallow in on eth+ 8000:8100/tcp\n")
    first = run_fwsync(kernel_lab, "plan", "--detailed-exitcode", rules=rules)
    assert first.returncode == 2, first.stderr + first.stdout
    apply(kernel_lab, rules)
    again = run_fwsync(kernel_lab, "plan", "--detailed-exitcode", rules=rules)
    assert again.returncode == 0, again.stdout
    assert "No changes" in again.stdout
    assert "No changes" in apply(kernel_lab, rules).stdout


def test_port_published_after_apply_is_denied_without_another_apply(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    apply(kernel_lab, write_rules(tmp_path, "allow 80/tcp\n"))
    kernel_lab.publish(8080, 81)
    kernel_lab.publish(80, 80)
    assert kernel_lab.attacker.probe(8080) == "filtered"
    assert kernel_lab.attacker.probe(80) == "open"


_BURST = r"""
import json, socket, sys, time
addr, port, schedule = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
out, t0 = [], None
for pause, count in schedule:
    time.sleep(pause)
    for _ in range(count):
        now = time.monotonic()
        t0 = now if t0 is None else t0
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((addr, port))
            state = "open"
        except ConnectionRefusedError:
            state = "closed"
        except OSError:
            state = "filtered"
        finally:
            s.close()
        out.append([now - t0, state])
print(json.dumps(out))
"""
# Seven new connections back to back, then (after more than one refill interval) two more.
BURST = [(0, 7), (9, 2)]


def send_burst(lab: KernelLab, port: int, schedule: list[tuple[float, int]] | None = None
               ) -> tuple[list[float], list[str]]:
    res = lab.attacker.ns.run([sys.executable, "-I", "-c", _BURST, lab.attacker.host_v4,
                               str(port), json.dumps(schedule or BURST)])
    sent = json.loads(res.stdout)
    return [t for t, _ in sent], [state for _, state in sent]


def test_limit_means_one_thing_on_both_backends(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`limit` is defined once (fwsync.core.ruleset.LIMIT, a token bucket per source) and
    rendered twice: the same burst through either backend meets the same verdicts, and they
    are the ones the core's model gives for the times the connections were really sent. The
    second part checks the refill: a window rule (ufw's `recent`: the 6th within 30 s) would
    refuse it, as the iptables backend did while nftables let it through."""
    lab = kernel_lab
    lab.publish(2222, 80)
    rules = write_rules(tmp_path, "limit 2222/tcp\n")
    seen: dict[str, list[str]] = {}
    for name in ("iptables", "nftables"):
        monkeypatch.setenv("FWSYNC_BACKEND", name)
        apply(lab, rules)
        times, seen[name] = send_burst(lab, 2222)
        model = ["open" if ok else "closed" for ok in LIMIT.verdicts(times)]
        assert seen[name] == model, f"{name}: kernel {seen[name]}, model {model} at {times}"
        assert lab.trusted.probe(2222) == "open", "the bucket is per source"
    assert seen["iptables"] == seen["nftables"] == ["open"] * 5 + ["closed"] * 2 + \
        ["open", "closed"]


def test_reject_udp_answers_port_unreachable(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    kernel_lab.publish(53, 80, "udp")
    apply(kernel_lab, write_rules(tmp_path, "reject 53/udp\ndefault allow\n"))
    assert kernel_lab.attacker.probe(53, "udp") == "closed"
    assert kernel_lab.attacker.probe(53, "udp", v6=True) == "closed"


def test_direct_routing_to_a_container_address_is_dropped(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(5432, 80)
    # A neighbour that routes the containers' network via the host reaches them directly up to
    # Docker 27; 28 drops that itself (raw PREROUTING), and fwsync's switch does not reopen it.
    docker_verdict = "filtered" if lab.docker_drops_direct_routing else "open"
    lab.attacker.ns.ip("route", "add", CTR_NET_V4, "via", HOST_ATTACKER_V4)
    assert lab.attacker.probe(80, addr=CTR_V4) == docker_verdict
    apply(lab, write_rules(tmp_path, "default allow\n"))
    assert lab.attacker.probe(80, addr=CTR_V4) == "filtered"
    assert lab.attacker.probe(5432) == "open", "through the published port it is still allowed"
    apply(lab, write_rules(tmp_path, "default allow\nprotect direct-routing off\n"))
    assert lab.attacker.probe(80, addr=CTR_V4) == docker_verdict


def test_set_change_swaps_the_ipset_with_the_rules(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, "define ok 198.51.100.0/25\nallow from $ok to any port 5432\n")
    apply(lab, rules)
    before = set(lab.host.run(["ipset", "list", "-n"]).stdout.split())
    assert lab.attacker.probe(5432) == "filtered"
    write_rules(tmp_path, "define ok 198.51.100.0/25, 203.0.113.0/25\n"
                          "allow from $ok to any port 5432\n")
    plan = run_fwsync(lab, "plan", rules=rules).stdout
    assert "+ 203.0.113.0/25" in plan
    apply(lab, rules)
    after = set(lab.host.run(["ipset", "list", "-n"]).stdout.split())
    assert lab.attacker.probe(5432) == "open"
    if backend == "iptables":
        assert len(after) == 1 and not after & before, "the old ipset is gone, a new one is in"
    else:
        assert not after, "the nftables backend keeps its sets in its own table"


def test_invalid_rules_leave_the_kernel_byte_for_byte(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(5432, 80)
    apply(lab, write_rules(tmp_path, SEED_RULES))
    before = ruleset_snapshot(lab, lab.variant)
    bad = write_rules(tmp_path, "allow from 198.51.100.0/25 to any port 5432\nallow 99999/tcp\n",
                      name="20-bad.rules")
    res = run_fwsync(lab, "apply", rules=bad)
    assert res.returncode == 1
    assert "20-bad.rules:2:7: error:" in res.stderr and "nothing was changed" in res.stderr
    assert ruleset_snapshot(lab, lab.variant) == before
    assert lab.attacker.probe(5432) == "filtered"


def test_foreign_docker_user_rule_survives_apply_and_remove(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(5432, 80)
    lab.iptables("-I", "DOCKER-USER", "-s", "198.51.100.10/32", "-p", "tcp", "-j", "REJECT",
                 "--reject-with", "tcp-reset")
    pristine = ruleset_snapshot(lab, lab.variant)
    apply(lab, write_rules(tmp_path, "default allow\n"))
    assert "-A DOCKER-USER -s 198.51.100.10/32 -p tcp -j REJECT" in lab.save()
    assert lab.trusted.probe(5432) == "closed", "fwsync's allow RETURNs into the foreign rule"
    assert lab.attacker.probe(5432) == "open"
    res = run_fwsync(lab, "remove")
    assert res.returncode == 0, res.stderr
    assert ruleset_snapshot(lab, lab.variant) == pristine, "remove leaves nothing behind"
    assert lab.trusted.probe(5432) == "closed"


def test_ipv6_without_docker_user_jumps_from_forward(make_kernel_lab, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab: KernelLab = make_kernel_lab("nft", v6_docker_user=False)
    lab.publish(5432, 80)
    apply(lab, write_rules(tmp_path, "allow from 198.51.100.0/25 to any port 5432\n"))
    assert "-A FORWARD -j FWSYNC-FORWARD" in lab.save(v6=True)
    assert lab.attacker.probe(5432, v6=True) == "filtered"
    assert lab.trusted.probe(5432, v6=True) == "filtered", "an IPv4 source never matches IPv6"
    assert lab.trusted.probe(5432) == "open"
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=tmp_path / "rules"
                      ).returncode == 0


@pytest.mark.parametrize(("edit", "hole"), [
    # an old dockerd that found its chain already there; Docker 20.10 creating a network
    (["-D", "FORWARD", "-j", "DOCKER-USER"], False),
    (["-I", "FORWARD", "1", "-o", "docker0", "-j", "ACCEPT"], True),  # an accept above it all
])
def test_a_forward_chain_that_skips_docker_user_is_caught(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        edit: list[str], hole: bool) -> None:
    """fwsync jumps from FORWARD as well as from DOCKER-USER: FORWARD without Docker's jump to
    DOCKER-USER is no hole (and no drift: that jump is Docker's); an accept above both is, and
    plan shows it as drift and apply puts fwsync's FORWARD jump first again."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, "allow from 198.51.100.0/25 to any port 5432\n")
    apply(lab, rules)
    assert lab.attacker.probe(5432) == "filtered"
    lab.iptables(*edit)
    assert lab.attacker.probe(5432) == ("open" if hole else "filtered")
    drift = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    if not hole:
        assert drift.returncode == 0, drift.stdout
        return
    assert drift.returncode == 2 and "FORWARD" in drift.stdout, drift.stdout
    apply(lab, rules)
    assert lab.save().splitlines().count("-A FORWARD -j FWSYNC-FORWARD") == 1
    assert lab.attacker.probe(5432) == "filtered"
    assert lab.trusted.probe(5432) == "open"
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0


def test_iptables_failed_kernel_call_rolls_back_to_the_previous_rules(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault we can't cause on purpose in a healthy kernel: ip6tables-restore failing after the
    IPv4 transaction went through. A stand-in ip6tables-*-restore on PATH fails; everything else
    is real. The IPv4 rules must be put back as they were."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, "allow 5432/tcp\n")
    apply(lab, rules)
    before = ruleset_snapshot(lab, lab.variant)
    shim = tmp_path / "shim"
    shim.mkdir()
    tool = shim / f"ip6tables-{lab.variant}-restore"
    tool.write_text("#!/bin/sh\necho 'ip6tables-restore: line 3 failed (simulated)' >&2\nexit 1\n")
    tool.chmod(0o755)
    write_rules(tmp_path, "define x 198.51.100.0/25\nallow from $x to any port 5432\n")
    res = run_fwsync(lab, "apply", rules=rules,
                     env={"PATH": f"{shim}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"})
    assert res.returncode == 1
    assert "simulated" in res.stderr and "nothing was changed" in res.stderr
    assert ruleset_snapshot(lab, lab.variant) == before
    assert lab.attacker.probe(5432) == "open"


def test_a_held_lock_stops_a_second_apply(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    rules = write_rules(tmp_path, "default deny\n")
    before = ruleset_snapshot(kernel_lab, kernel_lab.variant)
    with open(kernel_lab.dir / "fwsync.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = run_fwsync(kernel_lab, "apply", rules=rules, env={"FWSYNC_LOCK_TIMEOUT": "1"})
    assert res.returncode == 1 and "another fwsync holds" in res.stderr
    assert ruleset_snapshot(kernel_lab, kernel_lab.variant) == before
    apply(kernel_lab, rules)


def _foreign(lab: KernelLab) -> dict[str, str]:
    """The look-alike objects of test_foreign_look_alike_sets_and_chains_survive, as the kernel
    lists them now."""
    out = {name: lab.host.run(["ipset", "save", name]).stdout
           for name in ("fwsblock", "fws4-office-zzzzzz", "fws6-office-abcdef")}
    for v6 in (False, True):
        out[f"v{6 if v6 else 4} FWSYNC-X"] = "\n".join(
            line for line in lab.save(v6=v6).splitlines() if "FWSYNC-X" in line)
    return out


def test_foreign_look_alike_sets_and_chains_survive(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ownership is decided by one strict test: ipsets and chains whose names only look like
    fwsync's (`fwsblock`, `fws4-office-zzzzzz`, an IPv4 name on an IPv6 set, `FWSYNC-X`) are
    someone else's, and apply, a re-apply that swaps fwsync's own set, and remove leave them
    byte for byte."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    lab.host.run(["ipset", "restore"], input=(
        "create fwsblock hash:ip family inet\nadd fwsblock 203.0.113.66\n"
        "create fws4-office-zzzzzz hash:net family inet\nadd fws4-office-zzzzzz 203.0.113.0/28\n"
        "create fws6-office-abcdef hash:net family inet\nadd fws6-office-abcdef 203.0.113.16/28\n"))
    for v6 in (False, True):
        lab.iptables("-N", "FWSYNC-X", v6=v6)
        lab.iptables("-A", "FWSYNC-X", "-p", "tcp", "--dport", "7", "-j", "DROP", v6=v6)
        lab.iptables("-A", "DOCKER-USER", "-p", "tcp", "--dport", "7", "-j", "FWSYNC-X", v6=v6)
    before = _foreign(lab)
    assert all(before.values()), before
    rules = write_rules(tmp_path, "define office 198.51.100.0/25\n"
                                  "allow from $office to any port 5432\n")
    apply(lab, rules)
    assert _foreign(lab) == before, "apply"
    assert lab.attacker.probe(5432) == "filtered" and lab.trusted.probe(5432) == "open"
    write_rules(tmp_path, "define office 198.51.100.0/26\nallow from $office to any port 5432\n")
    apply(lab, rules)  # a new set for the office, the old one destroyed
    assert _foreign(lab) == before, "re-apply"
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert plan.returncode == 0, plan.stdout
    fwsync_ok(lab, "remove")
    assert _foreign(lab) == before, "remove"
    assert [n for n in lab.host.run(["ipset", "list", "-n"]).stdout.split()
            if n.startswith("fws")] == ["fwsblock", "fws4-office-zzzzzz", "fws6-office-abcdef"]


FOREIGN_INPUT_JUMPS = {False: "-A INPUT -s 203.0.113.0/24 -j FWSYNC-INPUT",
                       True: "-A INPUT -s 2001:db8:2::/48 -j FWSYNC-INPUT"}


def test_a_foreign_conditional_jump_to_fwsync_input_chain_is_not_fwsyncs(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fwsync's INPUT jump is one exact line, `-A INPUT -j FWSYNC-INPUT`. A user's conditional
    jump to fwsync's INPUT-path chain (after fwsync's own in IPv4, before it in IPv6) is someone
    else's rule: `status` still finds fwsync reached (that jump only sends packets to fwsync's
    own judgement), and apply, a re-apply that rewrites the chains, and remove leave it as it
    was. Before, any line ending in `-j FWSYNC-INPUT` was taken as fwsync's: apply and remove
    failed on deleting it."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, "allow from 198.51.100.0/25 to any port 5432\n")
    apply(lab, rules)
    lab.iptables("-A", "INPUT", "-s", "203.0.113.0/24", "-j", "FWSYNC-INPUT")
    lab.iptables("-I", "INPUT", "1", "-s", "2001:db8:2::/48", "-j", "FWSYNC-INPUT", v6=True)

    def foreign_kept() -> None:
        for v6, line in FOREIGN_INPUT_JUMPS.items():
            assert lab.save(v6=v6).splitlines().count(line) == 1, (v6, lab.save(v6=v6))

    status = json.loads(fwsync_ok(lab, "status", "--format", "json", rules=rules).stdout)
    assert str(status["enforcing"]).startswith("yes"), status["enforcing"]
    write_rules(tmp_path, "allow from 198.51.100.0/26 to any port 5432\n")
    apply(lab, rules)
    foreign_kept()
    for v6 in (False, True):
        assert lab.save(v6=v6).splitlines().count("-A INPUT -j FWSYNC-INPUT") == 1
    assert lab.attacker.probe(5432) == "filtered" and lab.trusted.probe(5432) == "open"
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert plan.returncode == 0, plan.stdout
    res = run_fwsync(lab, "remove")
    assert res.returncode == 0, res.stderr
    foreign_kept()
    for v6 in (False, True):
        saved = lab.save(v6=v6)
        assert "-A INPUT -j FWSYNC-INPUT" not in saved and "FWSYNC-FORWARD" not in saved
        assert "-A FWSYNC-INPUT" not in saved, "kept for the foreign jump, but emptied"
    assert "kept empty" in res.stdout and "FWSYNC-INPUT" in res.stdout, res.stdout
    again = run_fwsync(lab, "remove")
    assert again.returncode == 0 and "Nothing to remove" in again.stdout, again.stdout
    foreign_kept()
    assert lab.attacker.probe(5432) == "open", "removed: Docker's published port as before"
