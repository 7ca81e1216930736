"""A hand edit inside a big set (LIST_BELOW elements or more, known between full reads by the
digest in its name) is found by `plan` and repaired by `apply` without `--full`, with real
packets: the attacker's IPv6 address is taken out of a deny list of ~1000 addresses by hand
(`nft delete element` / `ipset del`), the attacker gets in, plan shows it, apply shuts it out.

Before this change the nftables backend trusted such a set by its name alone: plan said "no
changes" and apply left the attacker in (issue 19, item 6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fwsync.backends.base import LIST_BELOW
from tests.daemon_helpers import DaemonProc
from tests.lab import ATTACKER_V6, KernelLab, run_fwsync
from tests.steps import fwsync_ok

pytestmark = pytest.mark.kernel
PORT = 5432
# Every other address, so nothing merges, and the attacker's among them.
BLOCKED = [ATTACKER_V6, *(f"2001:db8:3::{2 * i:x}" for i in range(1, LIST_BELOW + 10))]


def big_deny_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "blocked.txt").write_text("\n".join(BLOCKED) + "\n")
    (rules / "10.rules").write_text("default allow\ndefine blocked file blocked.txt\n"
                                    f"deny from $blocked to any port {PORT} proto tcp\n")
    return rules


def set_name(lab: KernelLab, backend: str) -> str:
    if backend == "iptables":
        names = lab.host.run(["ipset", "list", "-name"]).stdout.split()
        return next(n for n in names if n.startswith("fws6-blocked-"))
    listing = lab.host.run(["nft", "list", "sets", "inet"]).stdout
    return next(w for w in listing.split() if w.startswith("blocked_v6_"))


def delete_element(lab: KernelLab, backend: str, name: str, element: str) -> None:
    if backend == "iptables":
        lab.host.run(["ipset", "del", name, element])
    else:
        lab.host.run(["nft", "delete", "element", "inet", "fwsync", name, f"{{ {element} }}"])


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_an_element_deleted_from_a_big_set_is_seen_by_plan_and_put_back(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(PORT, 80)
    rules = big_deny_rules(tmp_path)
    fwsync_ok(lab, "apply", "--backend", backend, "--yes", rules=rules)
    assert lab.attacker.probe(PORT, v6=True) == "filtered"

    delete_element(lab, backend, set_name(lab, backend), ATTACKER_V6)
    assert lab.attacker.probe(PORT, v6=True) == "open"

    plan = run_fwsync(lab, "plan", "--backend", backend, "--detailed-exitcode", rules=rules)
    assert plan.returncode == 2 and ATTACKER_V6 in plan.stdout, plan.stdout + plan.stderr
    fwsync_ok(lab, "apply", "--backend", backend, "--yes", rules=rules)
    assert lab.attacker.probe(PORT, v6=True) == "filtered"
    again = run_fwsync(lab, "plan", "--backend", backend, "--detailed-exitcode", rules=rules)
    assert again.returncode == 0, again.stdout


def replace_element(lab: KernelLab, backend: str, name: str, gone: str, new: str) -> None:
    """The same number of elements, the attacker's address swapped for another, in one process
    (nftables: one transaction), so that the daemon's cheap tick (0.1 s apart) does not catch
    the count one short between two (seen in a loaded CI run: the cheap check found it)."""
    if backend == "iptables":
        lab.host.run(["ipset", "restore"], input=f"del {name} {gone}\nadd {name} {new}\n")
    else:  # one transaction
        lab.host.run(["nft", "-f", "-"], input=f"delete element inet fwsync {name} {{ {gone} }}\n"
                                               f"add element inet fwsync {name} {{ {new} }}\n")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_daemon_repairs_a_same_count_edit_its_full_check_finds(
        make_kernel_lab: Callable[..., KernelLab], tmp_path: Path, backend: str) -> None:
    """Before: the full check (every FULL_CHECK_EVERY ticks) logged `drift`, and the reconcile
    it triggered read the set by its name and count again, found nothing and left the attacker
    in (`result=unchanged`). The reconcile now reads at the depth of the check that found it
    (on nftables the netlink event for the edit may find it first; either must repair it)."""
    lab = make_kernel_lab("nft")
    lab.publish(PORT, 80)
    rules = big_deny_rules(tmp_path)
    with DaemonProc(lab, rules, "--backend", backend, "--drift-interval", "0.1") as daemon:
        daemon.wait_ready()
        assert lab.attacker.probe(PORT, v6=True) == "filtered"
        seen = len(daemon.reconciles())
        replace_element(lab, backend, set_name(lab, backend), ATTACKER_V6, "2001:db8:3::1")
        if backend == "iptables":  # nftables: the netlink event may have it repaired already
            assert lab.attacker.probe(PORT, v6=True) == "open"
        drift = daemon.wait_for(lambda r: r.get("msg") == "drift", timeout=60,
                                what="a drift line")
        # ipsets announce nothing: the tick's full check found it. nf_tables announces the
        # element edit, and the daemon checks in full at once.
        assert drift["full"] is True and drift["detected_by"] == (
            "tick" if backend == "iptables" else "netlink"), drift
        repair = daemon.wait_reconcile(lambda r: "drift" in r["trigger"], after=seen,
                                       timeout=30, what="the reconcile the drift triggered")
        assert repair["result"] == "applied" and repair.get("drift"), repair
        assert lab.attacker.probe(PORT, v6=True) == "filtered"
        assert run_fwsync(lab, "plan", "--backend", backend, "--full", "--detailed-exitcode",
                          rules=rules, env=daemon.env).returncode == 0
