"""What fwsync observed of the world, as plain data the core can reason about."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

L4Proto = Literal["tcp", "udp"]
# How a Swarm service publishes a port: "ingress" (the routing mesh: every node of the swarm
# answers on it and hands the connection to a task, possibly on another node) or "host" (a task
# binds it on the node it runs on, as `docker run -p` does).
PublishMode = Literal["ingress", "host"]
Family = Literal[4, 6]


@dataclass(frozen=True, order=True)
class PublishedPort:
    """One host binding Docker made for a container: HOST_IP:HOST_PORT/PROTO → CONTAINER_PORT."""

    host_ip: str  # "0.0.0.0" or "::" for all addresses
    host_port: int
    proto: L4Proto
    container: str  # name, without Docker's leading "/"
    container_port: int
    container_id: str = ""
    image: str = ""
    networks: tuple[str, ...] = ()
    # Whether the container has a global IPv6 address on one of its networks (None: not observed).
    # Without one, Docker can't DNAT IPv6 to it: a `::` binding is served by docker-proxy on the
    # host's INPUT path, which fwsync's FORWARD-path rules never see.
    container_ipv6: bool | None = field(default=None, compare=False)
    # The container's own addresses (both families), where Docker's DNAT sends the binding's
    # connections: what identifies the container at packet time (core/build.py).
    container_addrs: tuple[str, ...] = field(default=(), compare=False)
    # A Swarm service's port: its name and publish mode. An ingress port belongs to no container
    # on this node (`container` is empty): the mesh publishes it on every node. A host-mode port
    # is its task's own binding (`container` is the task, e.g. web.1.k3x...).
    service: str = ""
    mode: PublishMode | Literal[""] = ""

    @property
    def owner(self) -> str:
        """Who publishes it, in words: the container's name; `service web (ingress mesh)`; or
        `web.1.k3x... (service web, host mode)` for a task's own binding."""
        if self.service and not self.container:
            return f"service {self.service} ({self.mode} mesh)" if self.mode == "ingress" \
                else f"service {self.service}"
        if self.service:
            return f"{self.container} (service {self.service}, {self.mode or 'host'} mode)"
        return self.container

    @property
    def target_word(self) -> str:
        """What `container_port` is to the reader: a service's target port on its tasks."""
        return "target port" if self.service and not self.container else "container port"
    # A binding on a network in `routed` gateway mode (Docker 27+): the network's name. Docker
    # does no DNAT there and the host port does not exist: clients connect to the container's
    # own address and port, so `host_ip` is the container's address on that network and
    # `host_port` the container's port (what clients connect to, as for every binding).
    routed: str = ""

    @property
    def family(self) -> int:
        return 6 if ":" in self.host_ip else 4

    @property
    def all_addresses(self) -> bool:
        return self.host_ip in ("0.0.0.0", "::", "")


@dataclass(frozen=True, order=True)
class Bridge:
    """A Docker bridge network whose interface is not named docker0 or br-<id> (`docker network
    create -o com.docker.network.bridge.name=NAME`). NAME is chosen by whoever may create
    networks: hostile input, written to the kernel only once checked (core/kernel_text)."""

    name: str
    network: str = ""  # the Docker network's own name (for messages)
    subnets: tuple[str, ...] = ()  # its IPAM subnets, both families, as Docker reports them


@dataclass(frozen=True, order=True)
class LinkFacts:
    """One interface as the host shows it (observe/host_links.py): what core/bridges.py checks
    a Docker network's bridge against."""

    name: str
    kind: str  # the link kind ("bridge", "veth", ...); "" for a device (a NIC) with none
    master: str = ""  # the bridge it is a port of, if any
    addresses: tuple[str, ...] = ()  # as configured, with their prefix: "203.0.113.1/25"
    routes: tuple[str, ...] = ()  # destinations of the unicast routes out of it (CIDRs)


GatewayMode = Literal["nat", "nat-unprotected", "routed", "isolated"]


@dataclass(frozen=True)
class DockerNetwork:
    """A bridge network as Docker reports it: what fwsync needs to know of its packet path."""

    name: str
    # The host's interface for it (docker0, br-<id>, or a name of the user's): hostile input,
    # for messages only (fwsync matches a network by its subnets).
    bridge: str
    # Per family (4, 6), Docker's gateway mode where it differs from plain `nat` and the engine
    # honours it (27+: `routed`; 28+: `nat-unprotected`, `isolated`).
    gateway_modes: tuple[tuple[Family, GatewayMode], ...] = ()
    subnets: tuple[str, ...] = ()  # CIDRs, both families
    # Host interfaces Docker lets reach the containers directly (28.2+ network option
    # com.docker.network.bridge.trusted_host_interfaces).
    trusted_host_interfaces: tuple[str, ...] = ()
    # The bridge's name was given by whoever created the network (`-o
    # com.docker.network.bridge.name=NAME`): Docker adopts an interface of that name if one
    # exists. Then `endpoints`, the endpoints Docker has on the network (its running containers,
    # Swarm's sandboxes; None: not counted), bounds how many ports the bridge may have
    # (core/bridges.py).
    user_named: bool = field(default=False, compare=False)
    endpoints: int | None = field(default=None, compare=False)

    def mode(self, family: Family) -> GatewayMode:
        return dict(self.gateway_modes).get(family, "nat")

    def routed_families(self) -> tuple[Family, ...]:
        return tuple(f for f, m in self.gateway_modes if m == "routed")


@dataclass(frozen=True)
class SwarmNode:
    """This node's place in a Swarm (GET /info's Swarm, or what the networks show)."""

    manager: bool  # a manager lists services; a worker only sees what reaches it
    node_addr: str = ""  # the address other nodes reach it on (Swarm.NodeAddr)


@dataclass(frozen=True)
class ProxyCgroup:
    """The cgroup dockerd runs in, with the docker-proxy processes it starts (systemd's
    docker.service): a new connection to a socket of a process in it is one docker-proxy
    serves, whatever its port. Found from the kernel (observe/proxy_cgroup.py), not from
    anything a Docker user names."""

    path: str  # below the cgroup2 root: "system.slice/docker.service"
    level: int  # its depth there (nft's `socket cgroupv2 level`): 2 for the path above
    nft_path: str  # as nft resolves it, below /sys/fs/cgroup ("unified/..." on a hybrid host)
    # What dockerd itself listens on, (proto, port): its API over TCP, a Swarm node's ports.
    # Its sockets are in the same cgroup as docker-proxy's, and they are the host's to govern:
    # the catch-all leaves these, as the kernel showed them, to the host's firewall. Not a list
    # of ports dockerd might open some day: a port a Docker user may publish later on would be
    # left open by it.
    own_ports: tuple[tuple[L4Proto, int], ...] = ()


@dataclass(frozen=True)
class DockerState:
    """Docker as observed. `error`: Docker could not be asked and nothing is remembered of it
    (ports unknown). `stale`: Docker could not be asked (why), and this is what it reported
    when it last answered (`seen_at`, Unix time; None: it has never answered fwsync)."""

    ports: tuple[PublishedPort, ...] = ()
    # Bridge networks whose interface names don't follow docker0 / br-<id>.
    extra_bridges: tuple[Bridge, ...] = ()
    error: str | None = None
    containers: tuple[str, ...] = field(default=())
    # What Docker says its firewall is (GET /info FirewallBackend.Driver, Docker 29+), if it says.
    firewall_backend: str | None = None
    version: str = ""
    swarm: SwarmNode | None = None  # None: not part of a swarm
    # The Swarm services this node knows of (a manager: all; a worker: the ones on its ingress).
    services: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could be observed only in part, for plan and status
    # A worker's reading of the nat DOCKER-INGRESS chain, (proto, port) pairs: how it learns of
    # a mesh port with no event to say so (the daemon compares it on its drift tick).
    mesh_chain: frozenset[tuple[L4Proto, int]] | None = None
    mesh_pending: frozenset[tuple[L4Proto, int]] = frozenset()  # in it, but no service named
    seen_at: float | None = None
    stale: str | None = None
    # Docker's bridge networks (name, bridge, gateway modes): what routing into them looks like.
    networks: tuple[DockerNetwork, ...] = ()
    # The host's interfaces when Docker was asked (None: not read; never remembered: a bridge
    # is checked against what the host shows now).
    links: tuple[LinkFacts, ...] | None = field(default=None, compare=False)
    # dockerd's own cgroup, read from the kernel with the links (never remembered either);
    # None with `proxy_cgroup_note` saying why there is none.
    proxy_cgroup: ProxyCgroup | None = None
    proxy_cgroup_note: str = field(default="", compare=False)


def as_remembered(now: DockerState, memory: DockerState | None) -> DockerState:
    """Docker as it is now; when it cannot be asked, as it was when fwsync last enforced rules
    for it (its containers keep running and publishing without dockerd, or come back with
    the same ports). Without that, a `deny ... to container` rule and the bridges Docker had
    named were dropped by the next apply: what the rules deny became reachable."""
    if now.error is None or memory is None:
        return now
    return replace(memory, error=None, stale=now.error, links=now.links,
                   proxy_cgroup=now.proxy_cgroup, proxy_cgroup_note=now.proxy_cgroup_note)
