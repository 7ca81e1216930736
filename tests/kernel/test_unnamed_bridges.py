"""Docker bridges whose names fwsync does not know when it applies: a network given a bridge name
of its own (`com.docker.network.bridge.name`), and Swarm's `docker_gwbridge` with the routing
mesh on it, both created after `fwsync apply`, with no daemon and no second apply. Real packets,
both backends, both iptables variants; Docker's rules are Docker 20.10's (tests/lab_networks.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import KernelLab, run_fwsync
from tests.lab_networks import IngressJump, add_ingress, add_network, publish_ingress, publish_on
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 8443,7777 proto tcp
"""



def test_network_with_a_bridge_name_of_its_own_created_after_apply_is_governed(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    # `docker network create -o com.docker.network.bridge.name=fwsnet0 ...`, then a container
    # on it published on 8443 (a rule allows the office) and 9443 (no rule: the default).
    net = add_network(lab, "fwsnet0", 0)
    publish_on(lab, net, 8443, 80)
    publish_on(lab, net, 9443, 80)
    for v6 in (False, True):
        assert lab.trusted.probe(8443, v6=v6) == "open", "the office gets in"
        assert lab.attacker.probe(8443, v6=v6) == "filtered", "the rule is for the office only"
        assert lab.trusted.probe(9443, v6=v6) == "filtered", "no rule: the default denies"
    # The same kernel without fwsync's rules: it was fwsync that kept the attacker out.
    fwsync_ok(lab, "remove")
    assert lab.attacker.probe(8443) == "open"
    assert lab.attacker.probe(9443, v6=True) == "open"


@pytest.mark.parametrize("jump", ["below-user", "top"])
def test_swarm_mesh_port_on_docker_gwbridge_created_after_apply(
        kernel_lab: KernelLab, tmp_path: Path, backend: str, jump: IngressJump) -> None:
    """`docker swarm join` and `docker service create -p 7777:80` after `fwsync apply`: nat
    DOCKER-INGRESS DNATs host:7777 to the ingress sandbox on docker_gwbridge (port kept), and
    filter DOCKER-INGRESS accepts it. Docker inserts the jump to DOCKER-INGRESS on top of FORWARD
    and at once moves DOCKER-USER back above it ("below-user", as Debian's 20.10.24 leaves it on
    the Vagrant machines; 28.0.1+ jumps from DOCKER-FORWARD, behind DOCKER-USER, too). Left on
    top ("top", as Docker 17.06 did), its ACCEPT passes the iptables backend by until fwsync
    jumps from FORWARD itself: plan shows the drift, and apply (the daemon, within a drift tick)
    repairs it. fwsync's nftables table runs before every iptables chain: no such window."""
    lab = kernel_lab
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    gw = add_ingress(lab, (7777, 7778))
    publish_ingress(lab, gw, 7777, jump)
    publish_ingress(lab, gw, 7778, jump)
    if backend == "iptables" and jump == "top":
        assert lab.attacker.probe(7777) == "open", "Docker's ACCEPT above DOCKER-USER"
        drift = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
        assert drift.returncode == 2 and "jump" in drift.stdout, drift.stdout
        fwsync_ok(lab, "apply", rules=rules)  # what the daemon does on drift
    assert lab.trusted.probe(7777) == "open", "the office reaches the mesh port"
    assert lab.attacker.probe(7777) == "filtered", "the attacker does not"
    assert lab.trusted.probe(7778) == "filtered", "a mesh port no rule allows: the default"
    # A second service published later (`docker service update --publish-add`): Docker adds
    # to its DOCKER-INGRESS chains only, the FORWARD jump stays where it is.
    publish_ingress(lab, gw, 7779, jump)
    assert [lab.attacker.probe(7779), lab.trusted.probe(7779)] == ["filtered", "filtered"]
    fwsync_ok(lab, "remove")
    assert lab.attacker.probe(7777) == "open", "without fwsync the mesh port is open to all"
