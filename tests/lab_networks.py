"""More of Docker's bridges for a KernelLab, created while the lab runs (after `fwsync apply`):

- `add_network`: a user-defined bridge network with one container, under any bridge name (as
  `docker network create -o com.docker.network.bridge.name=NAME` makes it), and `publish_on` for
  `docker run --network NAME -p ...`;
- `add_ingress`: Swarm's routing mesh as a node's dockerd writes it: the `docker_gwbridge`
  network, the ingress sandbox on it, and `publish_ingress` for `docker service create -p P:...`
  (nat `DOCKER-INGRESS` DNATs host:P to the sandbox's address on docker_gwbridge, port P kept;
  filter `DOCKER-INGRESS` accepts it). IPVS, which picks a task behind the sandbox, is left
  out: the sandbox serves the port itself. What fwsync filters happens before it.

The rules are Docker 20.10's (libnetwork's bridge driver and service_linux.go), in the order it
adds them. Addresses: documentation ranges only, 203.0.113.128/25 in /28s (IPv4) and
2001:db8:d1N::/64 (IPv6), which no other part of a KernelLab uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from tests.lab import (
    HOST_ATTACKER_V4,
    HOST_ATTACKER_V6,
    DockerLab,
    KernelLab,
    Netns,
    Proto,
    add_addr,
    default_route,
    probe,
    veth,
)

# Where the jump to filter DOCKER-INGRESS ends up: just below DOCKER-USER ("below-user": Docker
# inserts it on top of FORWARD when it first publishes a mesh port on the node, then moves
# DOCKER-USER back above it; 28.0.1+ jumps from DOCKER-FORWARD, behind DOCKER-USER, too), or
# on top, above DOCKER-USER ("top": Docker 17.06 left it there), where its ACCEPT comes first.
IngressJump = Literal["top", "below-user"]


@dataclass(frozen=True)
class LabNetwork:
    """A bridge on HOST and one namespace behind it (a container, or the ingress sandbox)."""

    bridge: str
    ns: Netns
    gw_v4: str
    addr_v4: str
    net_v4: str
    gw_v6: str
    addr_v6: str
    net_v6: str


def _subnets(index: int) -> tuple[str, str, str, str, str, str]:
    base = 128 + 16 * index
    if not 0 <= index < 8:
        raise ValueError("index must be 0..7 (eight /28s in 203.0.113.128/25)")
    return (f"203.0.113.{base + 1}", f"203.0.113.{base + 2}", f"203.0.113.{base}/28",
            f"2001:db8:d1{index}::1", f"2001:db8:d1{index}::2", f"2001:db8:d1{index}::/64")


def add_network(lab: KernelLab, bridge: str, index: int, *, icc: bool = True,
                tcp_ports: tuple[int, ...] = (80,), v6: bool = True) -> LabNetwork:
    """`docker network create` of a bridge network named `bridge`, and one container on it
    serving `tcp_ports`: the bridge, the container, and the rules Docker adds for the network."""
    gw4, addr4, net4, gw6, addr6, net6 = _subnets(index)
    ns = lab._netns(f"n{index}")
    host = lab.host
    host.ip("link", "add", bridge, "type", "bridge")
    host.ip("link", "set", bridge, "up")
    add_addr(host, bridge, f"{gw4}/28")
    veth(host, f"veth-n{index}", ns, "eth0")
    host.ip("link", "set", f"veth-n{index}", "master", bridge)
    add_addr(ns, "eth0", f"{addr4}/28")
    if v6:
        add_addr(host, bridge, f"{gw6}/64")
        add_addr(ns, "eth0", f"{addr6}/64")
    default_route(ns, gw4, gw6 if v6 else None)
    lab.servers.append(lab.start_server(ns, tcp_ports))
    for fam6 in (False, True) if v6 else (False,):
        net = net6 if fam6 else net4
        lab.iptables("-t", "nat", "-A", "POSTROUTING", "-s", net, "!", "-o", bridge,
                     "-j", "MASQUERADE", v6=fam6)
        lab.iptables("-t", "nat", "-I", "DOCKER", "-i", bridge, "-j", "RETURN", v6=fam6)
        lab.iptables("-A", "FORWARD", "-o", bridge, "-m", "conntrack", "--ctstate",
                     "RELATED,ESTABLISHED", "-j", "ACCEPT", v6=fam6)
        lab.iptables("-A", "FORWARD", "-o", bridge, "-j", "DOCKER", v6=fam6)
        lab.iptables("-A", "FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "ACCEPT", v6=fam6)
        lab.iptables("-A", "FORWARD", "-i", bridge, "-o", bridge, "-j",
                     "ACCEPT" if icc else "DROP", v6=fam6)
        lab.iptables("-I", "DOCKER-ISOLATION-STAGE-1", "-i", bridge, "!", "-o", bridge,
                     "-j", "DOCKER-ISOLATION-STAGE-2", v6=fam6)
        lab.iptables("-I", "DOCKER-ISOLATION-STAGE-2", "-o", bridge, "-j", "DROP", v6=fam6)
    return LabNetwork(bridge, ns, gw4, addr4, net4, gw6, addr6, net6)


def publish_on(lab: KernelLab, net: LabNetwork, host_port: int, ctr_port: int,
               proto: Proto = "tcp", v6: bool = True) -> None:
    """The rules `docker run --network NET -p host_port:ctr_port/proto` adds."""
    match = ["-p", proto, "-m", proto, "--dport"]
    for fam6 in (False, True) if v6 else (False,):
        ctr, plen = (net.addr_v6, "/128") if fam6 else (net.addr_v4, "/32")
        dest = f"[{ctr}]:{ctr_port}" if fam6 else f"{ctr}:{ctr_port}"
        lab.iptables("-t", "nat", "-A", "DOCKER", "!", "-i", net.bridge, *match, str(host_port),
                     "-j", "DNAT", "--to-destination", dest, v6=fam6)
        lab.iptables("-t", "nat", "-A", "POSTROUTING", "-s", ctr + plen, "-d", ctr + plen,
                     *match, str(ctr_port), "-j", "MASQUERADE", v6=fam6)
        lab.iptables("-A", "DOCKER", "-d", ctr + plen, "!", "-i", net.bridge, "-o", net.bridge,
                     *match, str(ctr_port), "-j", "ACCEPT", v6=fam6)


GWBRIDGE = "docker_gwbridge"


def add_ingress(lab: KernelLab, ports: tuple[int, ...], index: int = 1) -> LabNetwork:
    """`docker swarm init` (or join) on this node: the docker_gwbridge network (inter-container
    traffic off, as Docker creates it) with the ingress sandbox on it, which serves `ports`
    (in Swarm, IPVS in the sandbox hands them on to a task, port kept)."""
    return add_network(lab, GWBRIDGE, index, icc=False, tcp_ports=ports, v6=False)


def publish_ingress(lab: KernelLab, gw: LabNetwork, port: int, jump: IngressJump = "top",
                    proto: Proto = "tcp") -> None:
    """What a node's dockerd adds for `docker service create -p PORT:...` (ingress mode), in
    libnetwork's order: the chains and their RETURNs, the nat jumps, the FORWARD jump, then
    the port's DNAT and ACCEPTs."""
    if "DOCKER-INGRESS" not in lab.iptables("-S").stdout:
        for table in ("nat", "filter"):
            lab.iptables("-t", table, "-N", "DOCKER-INGRESS")
            lab.iptables("-t", table, "-A", "DOCKER-INGRESS", "-j", "RETURN")
        for chain in ("OUTPUT", "PREROUTING"):
            lab.iptables("-t", "nat", "-I", chain, "-m", "addrtype", "--dst-type", "LOCAL",
                         "-j", "DOCKER-INGRESS")
        position = "1" if jump == "top" else "2"  # FORWARD's rule 1 is the jump to DOCKER-USER
        lab.iptables("-I", "FORWARD", position, "-j", "DOCKER-INGRESS")
        lab.iptables("-t", "nat", "-I", "POSTROUTING", "-m", "addrtype", "--src-type", "LOCAL",
                     "-o", gw.bridge, "-j", "MASQUERADE")
    lab.iptables("-t", "nat", "-I", "DOCKER-INGRESS", "-p", proto, "--dport", str(port),
                 "-j", "DNAT", "--to-destination", f"{gw.addr_v4}:{port}")
    lab.iptables("-I", "DOCKER-INGRESS", "-m", "state", "-p", proto, "--sport", str(port),
                 "--state", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    lab.iptables("-I", "DOCKER-INGRESS", "-p", proto, "--dport", str(port), "-j", "ACCEPT")


# The host's uplink as a bridge, named as many routers and VM hosts name theirs.
UPLINK = "br-lan"


def make_uplink_bridge(lab: KernelLab | DockerLab) -> None:
    """The attacker's link becomes a port of the host's uplink bridge `br-lan`, which carries
    the host's address on that link (as a router's LAN bridge does)."""
    host = lab.host
    host.ip("link", "add", UPLINK, "type", "bridge")
    for cidr in (f"{HOST_ATTACKER_V4}/25", f"{HOST_ATTACKER_V6}/64"):
        host.ip("addr", "del", cidr, "dev", "v-attacker")
    host.ip("link", "set", "v-attacker", "master", UPLINK)
    host.ip("link", "set", UPLINK, "up")
    host.ip("addr", "add", f"{HOST_ATTACKER_V4}/25", "dev", UPLINK)
    host.ip("addr", "add", f"{HOST_ATTACKER_V6}/64", "dev", UPLINK, "nodad")
    # The attacker's own view is unchanged (same link, same host addresses): IPv6 neighbours
    # need a moment before the first probe.
    deadline = time.monotonic() + 10
    while probe(lab.attacker, HOST_ATTACKER_V6, 1, timeout=1) == "filtered":
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
