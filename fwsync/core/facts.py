"""What was observed of a Docker host (its containers, images, docker-proxy processes, forward
chains, Swarm and enforcement), as plain data: the observe adapters gather it, and `fwsync
doctor`'s checks reason about it. Pure data, no behaviour beyond arithmetic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fwsync.core.enforcing import Enforcement
from fwsync.core.observed import DockerNetwork, LinkFacts, PublishedPort
from fwsync.rules.model import Policy


@dataclass(frozen=True)
class ContainerFacts:
    """One running container, from `docker inspect`."""

    name: str
    id: str = ""
    image: str = ""  # as the user named it (Config.Image), e.g. "postgres:16"
    image_id: str = ""
    memory_limit: int = 0  # bytes; 0 = no limit
    restart_policy: str = ""  # "", "no", "always", "unless-stopped", "on-failure"
    auto_remove: bool = False  # `--rm`: Docker refuses a restart policy for these
    env: tuple[tuple[str, str], ...] = ()
    extra_hosts: tuple[str, ...] = ()  # `--add-host NAME:ADDRESS`
    addresses: tuple[str, ...] = ()  # the container's own addresses on its networks
    ports: tuple[PublishedPort, ...] = ()


@dataclass(frozen=True)
class ImageFacts:
    """One top-level image, as `docker system df` lists it."""

    id: str
    tags: tuple[str, ...] = ()  # without Docker's "<none>:<none>" placeholder
    size: int = 0  # bytes, layers shared with other images included
    shared_size: int = -1  # bytes also used by other images; -1 = unknown
    containers: int = -1  # containers (running or not) made from it; -1 = unknown

    @property
    def unique_size(self) -> int:
        """What removing it would free (its size if sharing is unknown)."""
        return self.size - self.shared_size if self.shared_size >= 0 else self.size


@dataclass(frozen=True)
class ProxyFacts:
    """One docker-proxy process (Docker's userland proxy for one published port) and the CPU
    time it used while sampled."""

    pid: int
    proto: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int
    cpu_seconds: float  # user + system time used during the sample
    interval: float  # seconds sampled

    @property
    def cpu_share(self) -> float:
        """Fraction of one CPU core (1.0 = a whole core)."""
        return self.cpu_seconds / self.interval if self.interval > 0 else 0.0


DOCKER_NFT_TABLE = "docker-bridges"  # Docker 29's `ip` and `ip6` tables (firewall-backend nftables)


@dataclass(frozen=True)
class ForwardFacts:
    """Who decides forwarded packets besides fwsync, from the kernel."""

    # nft families ("ip", "ip6") holding Docker's own nftables table (firewall-backend nftables)
    docker_nftables: tuple[str, ...] = ()
    # "FAMILY TABLE CHAIN" of every forward-hook chain outside Docker's tables whose policy is
    # drop, e.g. "ip filter FORWARD" (iptables-nft's, where ufw sets its forward policy)
    dropping: tuple[str, ...] = ()

    def drops(self, family: str) -> tuple[str, ...]:
        """The chains that see the packets of Docker's table of this family: a drop in any base
        chain on the hook is final, whatever Docker's own chain accepted."""
        return tuple(d for d in self.dropping if d.split()[0] in (family, "inet"))


@dataclass(frozen=True)
class SwarmFacts:
    """This node's place in a Swarm, the nodes it must talk to, and the host firewall between."""

    manager: bool
    node_addr: str = ""
    # The other nodes' addresses: a manager knows every node; a worker, the managers.
    peers: tuple[str, ...] = ()
    mesh: tuple[PublishedPort, ...] = ()  # the services' ingress ports, open on this node too
    services: tuple[str, ...] = ()
    # ufw's rules and incoming policy as fwsync reads them (the ufw importer); None when ufw is
    # not installed or not enabled (`ufw_note` says which).
    ufw: Policy | None = None
    ufw_note: str = ""


@dataclass(frozen=True)
class HostFacts:
    containers: tuple[ContainerFacts, ...] = ()
    images: tuple[ImageFacts, ...] = ()
    swap_total_kb: int | None = None  # None: could not be read
    proxies: tuple[ProxyFacts, ...] | None = None  # None: not sampled
    # Whether fwsync's rules are in the kernel and reached first; None: the kernel could not
    # be read.
    enforcement: Enforcement | None = None
    forward: ForwardFacts | None = None  # None: the kernel's firewall could not be read
    swarm: SwarmFacts | None = None  # None: not a Swarm node
    # Docker's bridge networks and the host's interfaces (core/bridges.py checks one against
    # the other); links None: the interfaces could not be read.
    networks: tuple[DockerNetwork, ...] = ()
    links: tuple[LinkFacts, ...] | None = None
    # Why a check could not run (check id → reason), e.g. /proc/meminfo unreadable.
    unavailable: Mapping[str, str] = field(default_factory=dict)
