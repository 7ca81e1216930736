"""Swarm services' published ports, as this node can see them, as plain PublishedPort values.

A manager lists every service (GET /services): each port a service publishes in `ingress` mode
is open on every node of the swarm (the routing mesh), so it is this node's binding too. A
worker cannot list services; what reaches it is its own view: the ingress network, inspected
verbosely, names the services the mesh serves and their published ports (without a protocol:
libnetwork prints "Target: 80, Publish: 8080"), and the nat `DOCKER-INGRESS` chain holds the
protocol of each port it DNATs. A host-mode port is a task's own binding on the node that runs
it, listed with the task's container (observe/docker.py reads its service label).

Nothing here widens access: a port whose service or protocol this node cannot tell is left out
(and said so); fwsync's default still covers it, as every DNATed connection.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwsync.core.observed import L4Proto, PublishedPort, SwarmNode

SERVICE_LABEL = "com.docker.swarm.service.name"
# `-A DOCKER-INGRESS -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:8080`
_INGRESS_DNAT = re.compile(r"^-A DOCKER-INGRESS -p (tcp|udp)(?: -m (?:tcp|udp))? --dport (\d+) "
                           r"-j DNAT\b")
_VERBOSE_PORT = re.compile(r"^Target: (\d+), Publish: (\d+)$")


# A node in these states belongs to a swarm (pending: (re)joining, as after a reboot; locked:
# autolock waits for its key), even if it can't list anything yet.
MEMBER_STATES = ("active", "pending", "locked")


def swarm_node(info: dict[str, Any]) -> SwarmNode | None:
    """GET /info's Swarm section → this node's place, or None when it is in no swarm."""
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") not in MEMBER_STATES:
        return None
    return SwarmNode(manager=bool(swarm.get("ControlAvailable")),
                     node_addr=str(swarm.get("NodeAddr") or ""))


def ingress_network(networks: Iterable[dict[str, Any]]) -> str | None:
    """The routing mesh's network (`ingress`, unless the user made another with `docker network
    create --ingress`): its id when this node is in a swarm, else None."""
    return next((str(net.get("Id") or net.get("Name")) for net in networks
                 if net.get("Ingress") is True), None)


def _image(spec: dict[str, Any]) -> str:
    image = str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""))
    return image.split("@", 1)[0]  # the digest Docker pins it to says nothing to a reader


def service_ports(services: Iterable[dict[str, Any]]) -> list[PublishedPort]:
    """A manager's GET /services → the ingress ports, open on this node as on every other.
    `Endpoint.Ports` holds what Swarm assigned (a published port left out of the spec gets one
    from 30000-32767); host-mode ports are left to the nodes that run their tasks."""
    found: list[PublishedPort] = []
    for svc in services:
        spec = svc.get("Spec") or {}
        name = str(spec.get("Name", ""))
        for port in (svc.get("Endpoint") or {}).get("Ports") or []:
            if (port.get("PublishMode") or "ingress") != "ingress":
                continue
            proto_text, published = port.get("Protocol") or "tcp", port.get("PublishedPort")
            if proto_text not in ("tcp", "udp") or not isinstance(published, int) \
                    or not 0 < published < 65536:
                continue  # sctp (no word for it in the rules yet), or not published
            proto: L4Proto = "udp" if proto_text == "udp" else "tcp"
            found.append(PublishedPort(
                host_ip="0.0.0.0", host_port=published, proto=proto, container="",
                container_port=int(port.get("TargetPort") or 0), image=_image(spec),
                service=name, mode="ingress"))
    return sorted(found)


def ingress_chain_ports(save_text: str) -> set[tuple[L4Proto, int]]:
    """The (protocol, port) pairs nat DOCKER-INGRESS DNATs, from `iptables-save -t nat`."""
    found: set[tuple[L4Proto, int]] = set()
    for line in save_text.splitlines():
        m = _INGRESS_DNAT.match(line.strip())
        if m is not None:
            found.add(("udp" if m.group(1) == "udp" else "tcp", int(m.group(2))))
    return found


def worker_service_ports(ingress: dict[str, Any], mesh: set[tuple[L4Proto, int]] | None
                         ) -> tuple[list[PublishedPort], list[str]]:
    """A worker's own view: the verbose ingress network (service → published ports) and the
    nat DOCKER-INGRESS chain (`mesh`: each port's protocol; None when it could not be read).
    Returns the ports and notes on what could not be told apart."""
    claims: dict[int, dict[str, int]] = {}  # published port → service → target port
    for name, info in (ingress.get("Services") or {}).items():
        if not name:
            continue  # the ingress sandbox's own endpoint
        for text in (info or {}).get("Ports") or []:
            m = _VERBOSE_PORT.match(str(text).strip())
            if m is not None and 0 < int(m.group(2)) < 65536:
                claims.setdefault(int(m.group(2)), {})[str(name)] = int(m.group(1))
    found: list[PublishedPort] = []
    notes: list[str] = []
    for published, owners in sorted(claims.items()):
        names = ", ".join(sorted(owners))
        if mesh is None:
            notes.append(f"Swarm port {published} ({names}): this worker could not read the nat "
                         "DOCKER-INGRESS chain for its protocol; `service` rules do not match it "
                         "here (the default covers it)")
            continue
        protos = sorted(p for p, port in mesh if port == published)
        if len(owners) > 1 and len(protos) > 1:
            notes.append(f"Swarm port {published}: services {names} publish it, one per "
                         "protocol, and a worker cannot tell which is whose; `service` rules do "
                         "not match it here (the default covers it)")
            continue
        for proto in protos:
            for name, target in owners.items():
                found.append(PublishedPort(
                    host_ip="0.0.0.0", host_port=published, proto=proto, container="",
                    container_port=target, service=name, mode="ingress"))
    return sorted(found), notes


def read_ingress_chain() -> set[tuple[L4Proto, int]] | None:
    """nat DOCKER-INGRESS as the kernel holds it (iptables-nft, and iptables-legacy where its nat
    table exists: reading a legacy table that doesn't would create it). None: unreadable."""
    found: set[tuple[L4Proto, int]] = set()
    read = False
    legacy = Path("/proc/net/ip_tables_names")
    tools = ["iptables-nft-save"]
    if legacy.exists() and "nat" in legacy.read_text().split():
        tools.append("iptables-legacy-save")
    for tool in tools:
        try:
            res = subprocess.run([tool, "-t", "nat"], capture_output=True, text=True,
                                 check=False, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if res.returncode == 0:
            read = True
            found |= ingress_chain_ports(res.stdout)
    return found if read else None


@dataclass(frozen=True)
class SwarmView:
    """What this node sees of its swarm."""

    node: SwarmNode | None = None  # None: in no swarm
    ports: tuple[PublishedPort, ...] = ()  # the services' ingress ports
    services: tuple[str, ...] = ()  # the services' names
    notes: tuple[str, ...] = ()
    mesh_chain: frozenset[tuple[L4Proto, int]] | None = None  # a worker's DOCKER-INGRESS read
    # Ports in that chain that the ingress network named no service for (yet: the network's
    # gossip can lag the chain by seconds).
    mesh_pending: frozenset[tuple[L4Proto, int]] = frozenset()


def observe_swarm(client: Any, node: SwarmNode | None, networks: list[dict[str, Any]]
                  ) -> SwarmView:
    """`node` is what GET /info said, when it was asked; else the networks tell whether this is
    a swarm node and asking for the services tells a manager from a worker. Raises what the SDK
    raises when Docker stops answering (the caller treats it as Docker unreachable)."""
    from docker.errors import APIError

    mesh_net = ingress_network(networks)
    if node is None and mesh_net is None:
        return SwarmView()
    if node is None or node.manager:
        try:
            services = client.api.services()
            names = tuple(sorted(str((s.get("Spec") or {}).get("Name", "")) for s in services))
            return SwarmView(node or SwarmNode(manager=True), tuple(service_ports(services)),
                             names)
        except APIError:
            # 503 "This node is not a swarm manager", or a manager without a leader (quorum
            # lost, or still (re)joining): what the node sees itself is all there is.
            node = node or SwarmNode(manager=False)
    if mesh_net is None:  # joining, or its ingress network was removed: no mesh ports yet
        return SwarmView(node)
    try:
        ingress = client.api.inspect_network(mesh_net, verbose=True)
    except APIError as exc:
        return SwarmView(node, notes=(f"Swarm's ingress network could not be inspected "
                                      f"({exc.explanation or exc}): `service` rules match "
                                      "nothing here for now (the default covers the mesh)",))
    chain = read_ingress_chain()
    ports, notes = worker_service_ports(ingress, chain)
    names = tuple(sorted(str(n) for n in (ingress.get("Services") or {}) if n))
    claimed = set(claimed_ports(ingress))
    pending = frozenset(pair for pair in chain or () if pair[1] not in claimed)
    return SwarmView(node, tuple(ports), names, tuple(notes),
                     frozenset(chain) if chain is not None else None, pending)


def claimed_ports(ingress: dict[str, Any]) -> Iterable[int]:
    """The published ports the verbose ingress network names a service for."""
    for name, info in (ingress.get("Services") or {}).items():
        for text in (info or {}).get("Ports") or [] if name else []:
            m = _VERBOSE_PORT.match(str(text).strip())
            if m is not None:
                yield int(m.group(2))
