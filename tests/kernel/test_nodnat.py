"""Paths into containers that carry no DNAT, in a real kernel with real packets, for both
backends and both iptables variants:

- the INPUT path: docker-proxy's listening ports (IPv6 to a container without IPv6, or any
  publish Docker does not DNAT), judged by fwsync's rules while the host's own services (ssh)
  are left alone, and the host's INPUT firewall still deciding after fwsync's allow;
- networks in `routed` gateway mode (Docker 27+): clients connect to the container's address,
  no DNAT; the rules say who (by container, network or address), the default denies the rest;
- direct routing that Docker reopens (28's nat-unprotected & co): still dropped, unless the
  rules take that network out of the protection.

Docker is KernelLab's hand-written rules (its 20.10 layout, plus the ACCEPT lines Docker 28
writes for a routed or nat-unprotected network), and what fwsync would observe of Docker is
given as a DockerState: the e2e tests prove the same against real engines."""

from __future__ import annotations

import base64
import pickle
import sys
from pathlib import Path

import pytest

from fwsync.core.observed import DockerNetwork, DockerState, PublishedPort
from tests.lab import (
    BRIDGE_V4,
    CTR_NET_V4,
    CTR_NET_V6,
    CTR_V4,
    CTR_V6,
    KernelLab,
    probe,
    serve_tcp,
    wait_for,
)
from tests.steps import write_rules

pytestmark = pytest.mark.kernel



# Runs inside HOST: plan (and apply) with a given DockerState, what observing Docker would give
# (the lab has no dockerd). Prints the plan's changed objects, one a line.
_SEEING = r"""
import base64, pickle, sys
from pathlib import Path
from fwsync.reconcile import apply_planned, make_plan
rules, backend, mode = sys.argv[1], sys.argv[2], sys.argv[3]
# With the host's interfaces as observe_docker reads them: a bridge is trusted by what the
# host shows of it (core/bridges.py).
from fwsync.observe.host_links import with_links
state = with_links(pickle.loads(base64.b64decode(sys.argv[4])))
planned = make_plan(Path(rules), backend, docker=state)
if mode == "apply":
    apply_planned(planned)
print("\n".join([*planned.plan.notes, *(c.key for c in planned.plan.changes)]))
"""


def seeing(lab: KernelLab, rules: Path, backend: str, docker: DockerState,
           mode: str = "apply") -> str:
    """`fwsync apply` (or plan) as if Docker reported `docker`: its notes and changed objects."""
    blob = base64.b64encode(pickle.dumps(docker)).decode()
    # -s, not -I: -I ignores PYTHONPATH, and the editable install's fwsync (another checkout)
    # was the one tested.
    res = lab.host.run([sys.executable, "-s", "-c", _SEEING, str(rules), backend, mode, blob],
                       check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                         "PYTHONPATH": str(Path(__file__).parents[2])})
    assert res.returncode == 0, res.stderr + res.stdout
    return res.stdout


def apply_seeing(lab: KernelLab, rules: Path, backend: str, docker: DockerState) -> str:
    return seeing(lab, rules, backend, docker)


# What Docker reports for `docker run -p 8080:80` of a container without IPv6: two bindings;
# IPv4 is DNATed (lab.publish writes that), IPv6 is served by docker-proxy on HOST.
PROXIED = DockerState(ports=(
    PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, networks=("bridge",), container_ipv6=False),
    PublishedPort("::", 8080, "tcp", "web", 80, networks=("bridge",), container_ipv6=False),
# docker0 carries both families' gateways in the lab: Docker reports both subnets (a bridge with
# an address outside its network's subnets is not trusted, core/bridges.py).
), networks=(DockerNetwork("bridge", "docker0", subnets=(CTR_NET_V4, CTR_NET_V6)),))

OFFICE_RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 8080 proto tcp
"""


def test_docker_proxys_ipv6_port_is_judged_and_the_hosts_own_services_are_not(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(8080, 80, host_ip="0.0.0.0")  # IPv4 only: IPv6 goes to the proxy stand-in
    with serve_tcp(lab.host, [8080, 22, 9999]):
        for peer in lab.peers:
            wait_for(peer, peer.host_v6, 8080)
        assert lab.attacker.probe(8080, v6=True) == "open", "before: IPv6 bypasses the rules"

        apply_seeing(lab, write_rules(tmp_path, OFFICE_RULES), backend, PROXIED)

        for v6 in (False, True):
            assert lab.trusted.probe(8080, v6=v6) == "open", "the office gets in"
            assert lab.attacker.probe(8080, v6=v6) == "filtered", "nobody else does"
            for port in (22, 9999):  # the host's own services: ufw's business, not fwsync's
                assert lab.attacker.probe(port, v6=v6) == "open", port
        # A container reaching the host's proxy is container traffic: not governed.
        assert probe(lab.ctr, BRIDGE_V4, 8080) == "open"


def test_the_hosts_input_firewall_still_decides_after_an_allow(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """fwsync narrows on the INPUT path as on FORWARD: its allow hands the connection on to the
    host's INPUT rules (ufw's deny here), its deny comes before them."""
    lab = kernel_lab
    with serve_tcp(lab.host, [8080]):
        wait_for(lab.trusted, lab.trusted.host_v6, 8080)
        apply_seeing(lab, write_rules(tmp_path, OFFICE_RULES), backend, PROXIED)
        assert lab.trusted.probe(8080, v6=True) == "open"
        lab.iptables("-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP", v6=True)
        assert lab.trusted.probe(8080, v6=True) == "filtered", "the host firewall said no"
        lab.iptables("-D", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP", v6=True)
        # An ACCEPT put first in INPUT: with iptables, fwsync's jump is no longer first, which
        # plan shows as drift and apply repairs; nftables' input chain runs before it anyway.
        lab.iptables("-I", "INPUT", "1", "-p", "tcp", "--dport", "8080", "-j", "ACCEPT",
                     v6=True)
        changed = seeing(lab, tmp_path / "rules", backend, PROXIED, "plan").splitlines()
        if backend == "iptables":
            assert "ipv6 jump" in changed, changed
            apply_seeing(lab, tmp_path / "rules", backend, PROXIED)
        else:
            assert lab.attacker.probe(8080, v6=True) == "filtered"
        assert lab.host.run([lab.tool("iptables-save", v6=True)]).stdout.count(
            "-A INPUT -j FWSYNC-INPUT") == (backend == "iptables")
        assert lab.attacker.probe(8080, v6=True) == "filtered"
        assert lab.trusted.probe(8080, v6=True) == "open"


# A network in `routed` gateway mode on the lab's bridge, and the container on it: Docker 28
# writes no DNAT and accepts the published container port (80) at the container's address.
ROUTED = DockerState(ports=(
    PublishedPort(CTR_V4, 80, "tcp", "rweb", 80, networks=("routed",), routed="routed"),
    PublishedPort(CTR_V6, 80, "tcp", "rweb", 80, networks=("routed",), routed="routed"),
), networks=(DockerNetwork("routed", "docker0", ((4, "routed"), (6, "routed")),
                           (CTR_NET_V4, CTR_NET_V6)),))


def docker_accepts(lab: KernelLab, *ports: int) -> None:
    """Docker 28's FORWARD ACCEPT for container ports at the container's own address (a routed
    network's published ports; with every port, a nat-unprotected network), first in DOCKER
    (the 28 layout ends it with the bridge's drop of unpublished ports), and no raw-table drop
    of direct access (a routed or nat-unprotected network has none)."""
    for v6, ctr in ((False, CTR_V4), (True, CTR_V6)):
        for port in ports:
            lab.iptables("-I", "DOCKER", "-d", ctr, "!", "-i", lab.bridge, "-o", lab.bridge,
                         "-p", "tcp", "--dport", str(port), "-j", "ACCEPT", v6=v6)
        if lab.docker == "28":
            while lab.iptables("-t", "raw", "-D", "PREROUTING", "-d", ctr, "!", "-i",
                               lab.bridge, "-j", "DROP", v6=v6, check=False).returncode == 0:
                pass


def direct(peer_probe: object, *ports: int) -> dict[tuple[str, int], str]:
    assert callable(peer_probe)
    return {(addr, port): peer_probe(addr, port) for addr in (CTR_V4, CTR_V6) for port in ports}


@pytest.mark.parametrize("rule", [
    "allow from $office to container rweb port 80 proto tcp",
    "allow from $office to network routed port 80 proto tcp",
    f"allow from $office to {CTR_NET_V4} port 80 proto tcp\n"
    f"allow from $office to {CTR_NET_V6} port 80 proto tcp",
])
def test_a_routed_network_is_reached_by_allowed_sources_only(
        kernel_lab: KernelLab, tmp_path: Path, backend: str, rule: str) -> None:
    lab = kernel_lab
    docker_accepts(lab, 80, 81)  # 81 too: fwsync's default, not Docker, must keep it out
    for peer in lab.peers:
        assert probe(peer, CTR_V4, 80) == "open", "before: routed, open to everyone"
    rules = write_rules(tmp_path, "default deny incoming\n"
                                  "define office 198.51.100.0/25, 2001:db8:1::/64\n" + rule)

    # Without knowing the network is routed, the direct-routing protection cuts it off.
    apply_seeing(lab, rules, backend, DockerState(ports=ROUTED.ports))
    assert set(direct(lambda a, p: probe(lab.trusted, a, p), 80).values()) == {"filtered"}

    apply_seeing(lab, rules, backend, ROUTED)
    assert direct(lambda a, p: probe(lab.trusted, a, p), 80, 81) == {
        (CTR_V4, 80): "open", (CTR_V6, 80): "open",
        (CTR_V4, 81): "filtered", (CTR_V6, 81): "filtered"}, "allowed port only"
    assert set(direct(lambda a, p: probe(lab.attacker, a, p), 80, 81).values()) == {"filtered"}


def test_direct_routing_docker_reopens_stays_dropped_unless_the_rules_say_otherwise(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """Docker 28's nat-unprotected (and allow-direct-routing, trusted host interfaces,
    DOCKER_INSECURE_NO_IPTABLES_RAW) accept direct connections to container addresses."""
    lab = kernel_lab
    lab.publish(8080, 80)
    docker_accepts(lab, 80, 81)  # after publish: 28's raw drop for the container goes too
    lan = DockerState(ports=(PublishedPort("0.0.0.0", 8080, "tcp", "web", 80,
                                           networks=("lan",)),),
                      networks=(DockerNetwork("lan", "docker0", ((4, "nat-unprotected"),),
                                              (CTR_NET_V4, CTR_NET_V6)),))
    assert probe(lab.attacker, CTR_V4, 81) == "open", "before: reopened by Docker"
    base = "default deny incoming\nallow from 198.51.100.0/25 to network lan\n"
    apply_seeing(lab, write_rules(tmp_path, base), backend, lan)
    for peer in lab.peers:
        assert set(direct(lambda a, p, peer=peer: probe(peer, a, p), 80, 81).values()) == {
            "filtered"}, "the protection holds"
    assert lab.trusted.probe(8080) == "open" and lab.attacker.probe(8080) == "filtered"

    apply_seeing(lab, write_rules(tmp_path, "protect direct-routing off to network lan\n"
                                  + base), backend, lan)
    assert probe(lab.trusted, CTR_V4, 81) == "open", "the rules let the office in directly"
    assert probe(lab.attacker, CTR_V4, 81) == "filtered", "the default keeps the rest out"
    assert probe(lab.trusted, CTR_V6, 81) == "filtered", "IPv6 is not the office's: default"


def test_an_unknown_network_name_matches_nothing(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    docker_accepts(lab, 80)
    notes = apply_seeing(lab, write_rules(tmp_path, "allow to network ghost\n"
                                                    "protect direct-routing off to network x\n"),
                         backend, ROUTED)
    assert "no Docker network matches 'ghost'" in notes
    assert "no Docker network matches 'x'" in notes
    assert probe(lab.trusted, CTR_V4, 80) == "filtered", "routed: the default denies"
