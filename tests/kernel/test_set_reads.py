"""What reading the kernel promises about sets (Backend.read): a big set (LIST_BELOW elements or
more) is known by the digest in its name without listing its elements, ipset's element count is
still checked on every read, and `--full` lists every element, so a hand edit that keeps the
count is found too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwsync.backends.base import LIST_BELOW
from tests.lab import KernelLab, run_fwsync

pytestmark = pytest.mark.kernel
PORT = 5432
# A big set: every other address, so that nothing merges. One of them is edited by hand.
ENTRIES = [f"2001:db8:3::{2 * i:x}" for i in range(1, LIST_BELOW + 10)]
GONE, NEW = "2001:db8:3::14", "2001:db8:3::99"  # NEW is odd: in no entry


def _rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "office.txt").write_text("\n".join(ENTRIES) + "\n")
    (rules / "10.rules").write_text("default deny incoming\ndefine office file office.txt\n"
                                    f"allow from $office to any port {PORT} proto tcp\n")
    return rules


def _plan(lab: KernelLab, backend: str, rules: Path, *extra: str) -> tuple[int, str]:
    res = run_fwsync(lab, "plan", "--backend", backend, "--detailed-exitcode", *extra,
                     rules=rules)
    assert res.returncode in (0, 2), res.stderr
    return res.returncode, res.stdout


def _set_name(lab: KernelLab, backend: str) -> str:
    if backend == "iptables":
        names = lab.host.run(["ipset", "list", "-name"]).stdout.split()
        return next(n for n in names if n.startswith("fws6-office-"))
    listing = lab.host.run(["nft", "list", "sets", "inet"]).stdout
    return next(w for w in listing.split() if w.startswith("office_v6_"))


def _edit(lab: KernelLab, backend: str, name: str, delete: str, add: str | None) -> None:
    if backend == "iptables":
        lab.host.run(["ipset", "del", name, delete])
        if add:
            lab.host.run(["ipset", "add", name, add])
    else:
        lab.host.run(["nft", "delete", "element", "inet", "fwsync", name, f"{{ {delete} }}"])
        if add:
            lab.host.run(["nft", "add", "element", "inet", "fwsync", name, f"{{ {add} }}"])


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_full_finds_an_element_replaced_by_hand(kernel_lab: KernelLab, tmp_path: Path,
                                                backend: str) -> None:
    kernel_lab.publish(PORT, 80)
    rules = _rules(tmp_path)
    assert run_fwsync(kernel_lab, "apply", "--backend", backend, "--yes",
                      rules=rules).returncode == 0
    assert _plan(kernel_lab, backend, rules)[0] == 0
    assert _plan(kernel_lab, backend, rules, "--full")[0] == 0

    # Same count, other content, under the name that says it is unchanged.
    _edit(kernel_lab, backend, _set_name(kernel_lab, backend), GONE, NEW)
    code, out = _plan(kernel_lab, backend, rules, "--full")
    assert code == 2 and NEW in out and GONE in out, out
    if backend == "nftables":  # the iptables backend's repair of a set in place is its own work
        assert run_fwsync(kernel_lab, "apply", "--backend", backend, "--yes", "--full",
                          rules=rules).returncode == 0
        assert _plan(kernel_lab, backend, rules, "--full")[0] == 0


def test_ipset_count_is_checked_without_full(kernel_lab: KernelLab, tmp_path: Path) -> None:
    kernel_lab.publish(PORT, 80)
    rules = _rules(tmp_path)
    assert run_fwsync(kernel_lab, "apply", "--backend", "iptables", "--yes",
                      rules=rules).returncode == 0
    _edit(kernel_lab, "iptables", _set_name(kernel_lab, "iptables"), GONE, None)
    code, out = _plan(kernel_lab, "iptables", rules)
    assert code == 2 and GONE in out, out


_OTHER_OWNER = """
import nftables, sys
n = nftables.Nftables()
rc, out, err = n.cmd("add table inet other { flags owner; }")
print("ready" if rc == 0 else "failed " + err, flush=True)
sys.stdin.read()  # the table lives as long as this process's netlink socket
"""


def test_another_programs_owned_table_does_not_stop_nftables(kernel_lab: KernelLab,
                                                              tmp_path: Path) -> None:
    """libnftables 1.0.6 prints broken JSON for, or crashes on, a table with `flags owner`
    (firewalld makes one) when it lists the ruleset: reading finds such a table over netlink
    first and then lists only fwsync's own table."""
    kernel_lab.publish(PORT, 80)
    owner = subprocess.Popen([*kernel_lab.host.nsenter_prefix(), sys.executable, "-c",
                              _OTHER_OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        rules = _rules(tmp_path)
        res = run_fwsync(kernel_lab, "apply", "--backend", "nftables", "--yes", rules=rules)
        assert res.returncode == 0, res.stderr
        assert _plan(kernel_lab, "nftables", rules)[0] == 0
    finally:
        owner.kill()
        owner.wait()


def test_a_big_nftables_set_replaced_by_a_new_one_is_not_listed(kernel_lab: KernelLab,
                                                                 tmp_path: Path) -> None:
    """One entry of a big list changed: the new content is a new set, and the old one is
    deleted whole. The plan says so without listing the old one (listing a 100k-element
    interval set costs ~1.2 s of CPU); `--full` lists it; apply converges either way."""
    import json

    kernel_lab.publish(PORT, 80)
    rules = _rules(tmp_path)
    assert run_fwsync(kernel_lab, "apply", "--backend", "nftables", "--yes",
                      rules=rules).returncode == 0
    old = _set_name(kernel_lab, "nftables")
    (rules / "office.txt").write_text("\n".join([NEW if e == GONE else e for e in ENTRIES]))

    res = run_fwsync(kernel_lab, "plan", "--backend", "nftables", "--format", "json",
                     rules=rules)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    changes = {c["object"].split()[3]: c for c in doc["changes"] if " set " in c["object"]}
    assert changes[old] == {"object": f"inet fwsync set {old} (ipv6_addr)", "action": "delete",
                            "add": [], "remove": [], "not_listed": True}
    (new,) = (name for name in changes if name != old)
    assert changes[new]["action"] == "create" and NEW in changes[new]["add"]
    assert GONE not in changes[new]["add"] and len(changes[new]["add"]) == len(ENTRIES)
    assert doc["summary"]["remove"] == 1, "the inbound rule's old line only"

    full = json.loads(run_fwsync(kernel_lab, "plan", "--backend", "nftables", "--full",
                                 "--format", "json", rules=rules).stdout)
    listed = next(c for c in full["changes"] if c["object"].split()[3] == old)
    assert "not_listed" not in listed and GONE in listed["remove"]
    assert len(listed["remove"]) == len(ENTRIES)

    assert run_fwsync(kernel_lab, "apply", "--backend", "nftables", "--yes",
                      rules=rules).returncode == 0
    assert _set_name(kernel_lab, "nftables") == new
    assert old not in kernel_lab.host.run(["nft", "list", "sets", "inet"]).stdout
    assert _plan(kernel_lab, "nftables", rules, "--full")[0] == 0


_LOOK = """
import json, os, sys
from fwsync.backends.ipset_netlink import ipset_headers
from fwsync.backends.iptables import IptablesBackend, owned_counts
backend = IptablesBackend(os.environ.get("VARIANT") or None)
print(json.dumps({"netlink": owned_counts(ipset_headers() or {}),
                  "cheap": backend._holds_cheaply(), "holds": backend.holds()}))
"""


def _look(lab: KernelLab) -> dict[str, object]:
    import json

    res = lab.host.run([sys.executable, "-c", _LOOK], env={**os.environ, "VARIANT": ""})
    return dict(json.loads(res.stdout))


def test_ipsets_and_leftovers_are_read_over_netlink_as_the_tools_read_them(
        kernel_lab: KernelLab, tmp_path: Path) -> None:
    """ipset's names, types, families and counts over netlink equal `ipset list -terse`'s
    (fwsync's sets only; a look-alike and a set of another type are someone else's); whether
    the iptables backend holds anything is answered without a process where iptables-legacy
    is not in use, and equals the full read's answer."""
    from fwsync.backends.iptables import parse_ipset_terse

    kernel_lab.publish(PORT, 80)
    lab = kernel_lab
    assert _look(lab) == {"netlink": {}, "cheap": None if lab.variant == "legacy" else False,
                          "holds": False}
    rules = _rules(tmp_path)
    assert run_fwsync(lab, "apply", "--backend", "iptables", "--yes",
                      rules=rules).returncode == 0
    for create in ("fws4-office-zzzzzz hash:net family inet", "fws4-x-abcdef hash:ip",
                   "fws6-other-123456 hash:net family inet6"):
        lab.host.run(["ipset", "create", *create.split()])
    lab.host.run(["ipset", "add", "fws6-other-123456", "2001:db8:9::/64"])
    look = _look(lab)
    terse = parse_ipset_terse(lab.host.run(["ipset", "list", "-terse"]).stdout)
    assert look["netlink"] == terse and terse["fws6-other-123456"] == 1
    assert sorted(terse) == sorted([*(n for n in terse if n.startswith("fws6-office-")),
                                    "fws6-other-123456"])
    assert look["holds"] is True and look["cheap"] in (None if lab.variant == "legacy" else True,)

    # Only a set left behind (an interrupted remove): still something the backend holds.
    assert run_fwsync(lab, "remove").returncode == 0
    lab.host.run(["ipset", "create", "fws4-left-abcdef", "hash:net", "family", "inet"])
    look = _look(lab)
    assert look["holds"] is True and look["cheap"] in (None if lab.variant == "legacy" else True,)
    lab.host.run(["ipset", "destroy", "fws4-left-abcdef"])
    look = _look(lab)
    assert look["holds"] is False and look["cheap"] in (None if lab.variant == "legacy" else False,)
