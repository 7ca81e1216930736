"""Three ways the rendered rules once said something other than the rules, shown with real
packets on both backends:

- a `to container` rule whose bindings exist in one family only was rendered by nftables as a
  rule of both families (its `_family_free` dedup): IPv6 clients reached a container the rule
  never named, or were dropped on the way to one it never named;
- two long define names sharing a prefix shortened to one ipset name, and one define's rule
  matched the other define's addresses;
- a define named like one of fwsync's own nftables sets (`src_0_0`, `limit_2`) took the place
  of the merged rules' set (a rule matched the define's addresses) or of a limit's meter (the
  apply failed).

The lab has no dockerd: the bindings are given as a DockerState, and KernelLab writes Docker's
DNAT for them by hand (tests/docker_layouts.py)."""

from __future__ import annotations

import base64
import pickle
import sys
from pathlib import Path

import pytest

from fwsync.core.observed import DockerNetwork, DockerState, PublishedPort
from tests.lab import CTR_NET_V4, CTR_NET_V6, KernelLab, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

# Runs inside HOST: apply as if Docker reported the given DockerState (the lab has no dockerd).
# The checkout's own fwsync, first on the path (-I would leave it to the installed one).
_APPLY_SEEING = r"""
import base64, pickle, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from fwsync.reconcile import apply_planned, make_plan
apply_planned(make_plan(Path(sys.argv[2]), sys.argv[3],
                        docker=pickle.loads(base64.b64decode(sys.argv[4]))))
"""
REPO = Path(__file__).resolve().parents[2]


def apply_seeing(lab: KernelLab, rules: Path, backend: str, docker: DockerState) -> None:
    blob = base64.b64encode(pickle.dumps(docker)).decode()
    res = lab.host.run([sys.executable, "-I", "-c", _APPLY_SEEING, str(REPO), str(rules),
                        backend, blob], check=False)
    assert res.returncode == 0, res.stderr + res.stdout


# `web` publishes 8080 on IPv4 only, `db` the same port on IPv6 only. The lab's one fake
# container answers for both: what fwsync knows of them is this DockerState.
ONE_FAMILY_EACH = DockerState(ports=(
    PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, networks=("bridge",), container_ipv6=True),
    PublishedPort("::", 8080, "tcp", "db", 80, networks=("bridge",), container_ipv6=True),
), networks=(DockerNetwork("bridge", "docker0", subnets=(CTR_NET_V4, CTR_NET_V6)),))


@pytest.mark.parametrize(("rules", "want_v4", "want_v6"), [
    ("default deny incoming\nallow to container web\n", "open", "filtered"),
    ("default allow incoming\ndeny to container web\n", "filtered", "open"),
], ids=["allow", "deny"])
def test_a_rule_to_a_one_family_binding_stays_in_that_family(
        make_kernel_lab, tmp_path: Path, backend: str,  # type: ignore[no-untyped-def]
        rules: str, want_v4: str, want_v6: str) -> None:
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(8080, 80)
    apply_seeing(lab, write_rules(tmp_path, rules), backend, ONE_FAMILY_EACH)
    for peer in lab.peers:
        assert peer.probe(8080) == want_v4, f"{peer.name}: web over IPv4"
        assert peer.probe(8080, v6=True) == want_v6, f"{peer.name}: db over IPv6, no rule names it"


# These two shortened alike under the old naming (13 characters and 4 hex digits of a digest:
# office_in_the~3426), found by trying names with this prefix until two did.
TWINS = ("office_in_the_north_wing_37", "office_in_the_north_wing_626")


def test_two_long_define_names_keep_their_own_addresses(
        make_kernel_lab, tmp_path: Path, backend: str) -> None:  # type: ignore[no-untyped-def]
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(8080, 80)
    lab.publish(9090, 81)
    a, b = TWINS
    rules = write_rules(tmp_path, f"""\
default deny incoming
define {a} {lab.trusted.v4}, {lab.trusted.v6}
define {b} {lab.attacker.v4}, {lab.attacker.v6}
allow from ${a} to any port 8080 proto tcp
allow from ${b} to any port 9090 proto tcp
""")
    fwsync_ok(lab, "apply", "--yes", rules=rules)
    for v6 in (False, True):
        assert lab.trusted.probe(8080, v6=v6) == "open"
        assert lab.attacker.probe(8080, v6=v6) == "filtered"
        assert lab.attacker.probe(9090, v6=v6) == "open"
        assert lab.trusted.probe(9090, v6=v6) == "filtered"
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0


def test_defines_named_like_fwsyncs_own_sets_keep_their_own_addresses(
        make_kernel_lab, tmp_path: Path, backend: str) -> None:  # type: ignore[no-untyped-def]
    """Rules 0 and 1 merge into one set (nftables named it src_0_0), rule 2's limit has a
    meter (limit_2): defines of those names must neither replace them nor be replaced. (A
    define held as a network, as limit_2 here, had nftables' very name of the meter.)"""
    lab: KernelLab = make_kernel_lab("nft")
    assert lab.trusted.v4 == "198.51.100.10"  # in limit_2's network; the attacker is not
    for port in (8080, 7000, 9090, 7777):
        lab.publish(port, 80)
    t, x = lab.trusted, lab.attacker
    rules = write_rules(tmp_path, f"""\
default deny incoming
define src_0_0 {x.v4}
define limit_2 198.51.100.8/30
allow from {t.v4} to any port 8080 proto tcp
allow from 203.0.113.99 to any port 8080 proto tcp
limit 7000/tcp
allow from $src_0_0 to any port 9090 proto tcp
allow from $limit_2 to any port 7777 proto tcp
""")
    fwsync_ok(lab, "apply", "--yes", rules=rules)
    want = {(t.name, 8080): "open", (x.name, 8080): "filtered",
            (t.name, 9090): "filtered", (x.name, 9090): "open",
            (t.name, 7777): "open", (x.name, 7777): "filtered",
            (t.name, 7000): "open", (x.name, 7000): "open"}
    # The limited port first: its meter adds every source it sees to the set it updates.
    got = {(peer.name, port): peer.probe(port) for port in (7000, 8080, 9090, 7777)
           for peer in lab.peers}
    assert got == want
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
