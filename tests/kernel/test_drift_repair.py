"""Every difference `plan` shows, `apply` repairs: a hand edit of each kind of object each backend
owns (iptables: both chains, the jumps, the ipsets and their elements, per family; nftables:
the table, its chains, rules, sets and their elements), then plan (shows it), apply, plan (shows
nothing). Real kernel, both iptables variants; real packets for a deny-list element."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc
from tests.lab import ATTACKER_V4, KernelLab, LabError, run_fwsync, wait_for
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

RULES = """\
default allow
define blocked 203.0.113.7, 203.0.113.99, 2001:db8:2::7, 2001:db8:2::99
deny from $blocked to any port 5432 proto tcp
limit 2222/tcp
allow 80,443/tcp
"""
Edit = Callable[[KernelLab], object]


def sh(lab: KernelLab, *script: str) -> None:
    for line in script:
        lab.host.run(["sh", "-c", line])


def ipset_name(lab: KernelLab, family: int) -> str:
    names = lab.host.run(["ipset", "list", "-n"]).stdout.split()
    [name] = [n for n in names if n.startswith(f"fws{family}-blocked-")]
    return name


def nft_set(lab: KernelLab, prefix: str) -> str:
    listing = json.loads(lab.host.run(["nft", "-j", "list", "sets", "inet"]).stdout)
    [name] = [o["set"]["name"] for o in listing["nftables"]
              if "set" in o and o["set"]["name"].startswith(prefix)]
    return name


def nft_handle(lab: KernelLab, chain: str, pattern: str) -> str:
    listing = lab.host.run(["nft", "-a", "list", "chain", "inet", "fwsync", chain]).stdout
    handles = [m.group(1) for line in listing.splitlines() if pattern in line
               and (m := re.search(r"# handle (\d+)", line))]
    return handles[0]  # the first of them (one per family)


def ipt(lab: KernelLab, v6: bool = False) -> str:
    return lab.tool("iptables", v6) + " -w"


IPTABLES_EDITS: dict[str, Edit] = {
    "ipset element deleted": lambda lab: sh(lab, f"ipset del {ipset_name(lab, 4)} "
                                                 f"{ATTACKER_V4}"),
    "ipset element added": lambda lab: sh(lab, f"ipset add {ipset_name(lab, 4)} 192.0.2.1"),
    "ipset flushed": lambda lab: sh(lab, f"ipset flush {ipset_name(lab, 6)}"),
    "ipv6 ipset element deleted": lambda lab: sh(lab, f"ipset del {ipset_name(lab, 6)} "
                                                      "2001:db8:2::99"),
    "stale owned ipset": lambda lab: sh(lab, "ipset create fws4-blocked-000000 hash:net "
                                             "family inet"),
    "rule deleted": lambda lab: sh(lab, f"{ipt(lab)} -D FWSYNC-INBOUND 3"),
    "rule inserted": lambda lab: sh(lab, f"{ipt(lab)} -I FWSYNC-INBOUND 1 -j RETURN"),
    "ipv6 rule replaced": lambda lab: sh(lab, f"{ipt(lab, True)} -R FWSYNC-INBOUND 3 -j RETURN"),
    "forward chain flushed": lambda lab: sh(lab, f"{ipt(lab)} -F FWSYNC-FORWARD"),
    "jump deleted": lambda lab: sh(lab, f"{ipt(lab)} -D DOCKER-USER -j FWSYNC-FORWARD"),
    "jump moved down": lambda lab: sh(lab, f"{ipt(lab)} -I DOCKER-USER 1 -p udp -j RETURN"),
    "ipv6 jump deleted": lambda lab: sh(lab, f"{ipt(lab, True)} -D DOCKER-USER -j "
                                             "FWSYNC-FORWARD"),
    # Docker's own jump to DOCKER-USER deleted is not fwsync's to repair: its FORWARD jump
    # judges meanwhile (tests/kernel/test_jump_guard.py). Its own FORWARD jump is.
    "FORWARD jump deleted": lambda lab: sh(lab, f"{ipt(lab)} -D FORWARD -j FWSYNC-FORWARD"),
    "chains removed": lambda lab: sh(
        lab, *(f"while {ipt(lab)} -D {chain} -j FWSYNC-FORWARD 2>/dev/null; do :; done"
               for chain in ("FORWARD", "DOCKER-USER")), f"{ipt(lab)} -F FWSYNC-FORWARD",
        f"{ipt(lab)} -F FWSYNC-INBOUND", f"{ipt(lab)} -X FWSYNC-FORWARD",
        f"{ipt(lab)} -X FWSYNC-INBOUND"),
}

NFT = "nft"
NFTABLES_EDITS: dict[str, Edit] = {
    "set element deleted": lambda lab: sh(
        lab, f"{NFT} delete element inet fwsync {nft_set(lab, 'blocked_v4_')} "
             f"{{ {ATTACKER_V4} }}"),
    "set element added": lambda lab: sh(
        lab, f"{NFT} add element inet fwsync {nft_set(lab, 'blocked_v4_')} {{ 192.0.2.1 }}"),
    "set flushed": lambda lab: sh(lab, f"{NFT} flush set inet fwsync "
                                       f"{nft_set(lab, 'blocked_v6_')}"),
    "port set element deleted": lambda lab: sh(
        lab, f"{NFT} delete element inet fwsync {nft_set(lab, 'ports.')} {{ 443 }}"),
    "stray set": lambda lab: sh(lab, f"{NFT} add set inet fwsync stray '{{ type ipv4_addr; }}'"),
    "rule deleted": lambda lab: sh(
        lab, f"{NFT} delete rule inet fwsync inbound handle "
             f"{nft_handle(lab, 'inbound', 'deny from $blocked')}"),
    "rule inserted": lambda lab: sh(lab, f"{NFT} insert rule inet fwsync inbound accept"),
    "forward chain flushed": lambda lab: sh(lab, f"{NFT} flush chain inet fwsync forward"),
    "base chain policy drop": lambda lab: sh(
        lab, f"{NFT} add chain inet fwsync forward '{{ policy drop; }}'"),
    "base chain re-made on the input hook": lambda lab: sh(
        lab, f"{NFT} flush chain inet fwsync forward",
        f"{NFT} delete chain inet fwsync forward",
        f"{NFT} add chain inet fwsync forward '{{ type filter hook input priority 0; }}'"),
    "base chain re-made after Docker's": lambda lab: sh(
        lab, f"{NFT} flush chain inet fwsync forward",
        f"{NFT} delete chain inet fwsync forward",
        f"{NFT} add chain inet fwsync forward '{{ type filter hook forward priority 10; "
        "policy accept; }'"),
    "stray chain": lambda lab: sh(lab, f"{NFT} add chain inet fwsync stray"),
    "inbound chain deleted": lambda lab: sh(
        lab, f"{NFT} flush chain inet fwsync forward", f"{NFT} flush chain inet fwsync inbound",
        f"{NFT} delete chain inet fwsync inbound"),
    "table dormant": lambda lab: sh(lab, f"{NFT} add table inet fwsync '{{ flags dormant; }}'"),
    "table deleted": lambda lab: sh(lab, f"{NFT} delete table inet fwsync"),
}


def fresh(lab: KernelLab, rules: Path) -> None:
    """fwsync's objects out and in again, so that each edit starts from a clean apply (and one
    that is not repaired does not spoil the next)."""
    run_fwsync(lab, "remove")
    lab.host.run(["nft", "delete", "table", "inet", "fwsync"], check=False)
    fwsync_ok(lab, "apply", rules=rules)


def repair_failure(lab: KernelLab, rules: Path, edit: Edit) -> str | None:
    """None when plan shows the edit and apply repairs it; else what went wrong."""
    fresh(lab, rules)
    try:
        edit(lab)
    except LabError as exc:  # e.g. the element is not there: an earlier edit was not repaired
        return f"could not make the edit: {exc}"[:600]
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    if plan.returncode != 2:
        return f"plan exited {plan.returncode} (2: changes): {_last(plan)}"
    applied = run_fwsync(lab, "apply", rules=rules)
    if applied.returncode != 0:
        return f"apply exited {applied.returncode}: {_last(applied)}"
    again = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    if again.returncode != 0:
        changed = [line.strip() for line in again.stdout.splitlines() if "(update)" in line
                   or "(create)" in line or "(delete)" in line]
        return f"plan after apply exited {again.returncode}: still {'; '.join(changed)}"
    return None


def _last(res: subprocess.CompletedProcess[str]) -> str:
    return (res.stderr.strip() or res.stdout.strip()).splitlines()[-1][:300]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_every_difference_plan_shows_apply_repairs(
        kernel_lab: KernelLab, tmp_path: Path, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", backend)
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    edits = IPTABLES_EDITS if backend == "iptables" else NFTABLES_EDITS
    failures = {name: problem for name, edit in edits.items()
                if (problem := repair_failure(lab, rules, edit)) is not None}
    assert failures == {}, "\n".join(f"{k}: {v}" for k, v in failures.items())


def test_a_flushed_chain_is_put_back_without_rewriting_the_others(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The iptables backend writes again only the chains the plan changed: the others keep
    their rules (their counters show it), and the restore deletes nothing, so it does not wait
    for the kernel to free deleted rules (~15 ms per iptables-nft-restore here)."""
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab = kernel_lab
    lab.publish(5432, 80)
    lab.publish(80, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.trusted.probe(80) == "open"  # its replies are counted by FWSYNC-FORWARD's rule 1

    def counters(chain: str) -> list[str]:
        return [line for line in lab.host.run([lab.tool("iptables-save"), "-c", "-t", "filter"]
                                              ).stdout.splitlines()
                if line.split("] ", 1)[-1].startswith(f"-A {chain} ")]

    forward = counters("FWSYNC-FORWARD")
    assert any(not line.startswith("[0:0]") for line in forward), forward
    sh(lab, f"{ipt(lab)} -F FWSYNC-INBOUND")
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 2
    fwsync_ok(lab, "apply", rules=rules)
    assert counters("FWSYNC-FORWARD") == forward  # not written again: the counts are kept
    assert counters("FWSYNC-INBOUND")  # put back
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
    assert lab.attacker.probe(5432) != "open" and lab.trusted.probe(80) == "open"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_deny_list_element_deleted_by_hand_is_put_back(
        kernel_lab: KernelLab, tmp_path: Path, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With real packets: the attacker gets in once its address is deleted from the live set,
    and is kept out again after apply (before, apply said Applied and left it in)."""
    monkeypatch.setenv("FWSYNC_BACKEND", backend)
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(5432) == "filtered"
    edit = IPTABLES_EDITS if backend == "iptables" else NFTABLES_EDITS
    edit["ipset element deleted" if backend == "iptables" else "set element deleted"](lab)
    assert lab.attacker.probe(5432) == "open"
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(5432) == "filtered"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_daemon_repairs_a_deleted_set_element(
        make_kernel_lab: Callable[..., KernelLab], tmp_path: Path, backend: str) -> None:
    lab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    with DaemonProc(lab, rules, "--backend", backend, "--drift-interval", "0.2") as daemon:
        daemon.wait_ready()
        assert lab.attacker.probe(5432) == "filtered"
        seen = len(daemon.reconciles())
        edit = IPTABLES_EDITS if backend == "iptables" else NFTABLES_EDITS
        edit["ipset element deleted" if backend == "iptables" else "set element deleted"](lab)
        daemon.wait_reconcile(lambda r: bool(r.get("drift")), after=seen,
                              what="a drift repair")
        # The repair must hold: no drift found again once it is done.
        settled = len(daemon.reconciles())
        assert lab.attacker.probe(5432) == "filtered"
        assert run_fwsync(lab, "plan", "--detailed-exitcode", "--backend", backend,
                          rules=rules, env=daemon.env).returncode == 0
        assert not any(r.get("drift") for r in daemon.reconciles()[settled:])


def test_the_daemon_never_adopts_a_bypass_it_reads_back(
        make_kernel_lab: Callable[..., KernelLab], tmp_path: Path) -> None:
    """A competing writer that puts an ACCEPT on top of FORWARD right after each of fwsync's
    writes (a stand-in iptables-nft-restore on the daemon's PATH runs the real one, then
    inserts it, while a flag file exists; everything else is real). The kernel then reads back
    `not reached:` after every apply. The daemon must keep finding that as drift, repair and
    report it, and enforce again once the writer stops; before, it took the read-back as what
    it enforces and went quiet with the port open."""
    lab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    flag = lab.dir / "competing"
    flag.touch()
    shim = tmp_path / "shim"
    shim.mkdir()
    tool = shim / "iptables-nft-restore"
    tool.write_text("#!/bin/sh\n/usr/sbin/iptables-nft-restore \"$@\" || exit $?\n"
                    f"[ -e {flag} ] && iptables-nft -w -I FORWARD 1 -o {lab.bridge} -j ACCEPT\n"
                    "exit 0\n")
    tool.chmod(0o755)
    path = f"{shim}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
    with DaemonProc(lab, rules, "--backend", "iptables", "--drift-interval", "0.2",
                    env={"PATH": path}) as daemon:
        daemon.wait_ready()
        # The daemon and the writer fight on: a SYN can meet the moment fwsync's jump is
        # first, so the attacker gets in at some moment, not at every probe (a probe sends
        # one SYN: PROBE_TIMEOUT is the first retransmission's).
        wait_for(lab.attacker, lab.attacker.host_addr(), 5432, want="open", timeout=10)
        seen = len(daemon.reconciles())
        for _ in range(3):
            rec = daemon.wait_reconcile(lambda r: bool(r.get("drift")), after=seen,
                                        what="a drift repair of the bypass")
            assert any("reads back differently" in n for n in rec.get("notes", [])), rec
            seen = daemon.reconciles().index(rec) + 1
        flag.unlink()
        # A repair already under way when the flag went may still have met the writer:
        # settled is the first repair that read back what it wrote.
        daemon.wait_reconcile(
            lambda r: bool(r.get("drift")) and not any(
                "reads back differently" in n for n in r.get("notes", [])),
            after=seen, what="a repair once the writer stopped")
        settled = len(daemon.reconciles())
        assert lab.attacker.probe(5432) == "filtered"
        assert lab.trusted.probe(5432) == "open"
        assert run_fwsync(lab, "plan", "--detailed-exitcode", "--backend", "iptables",
                          rules=rules, env=daemon.env).returncode == 0
        assert not any(r.get("drift") for r in daemon.reconciles()[settled:])
