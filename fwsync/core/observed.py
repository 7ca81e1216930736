"""What fwsync observed of the world, as plain data the core can reason about."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

L4Proto = Literal["tcp", "udp"]


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


@dataclass(frozen=True)
class DockerState:
    """Docker as observed; `error` is set when Docker could not be asked (ports then unknown)."""

    ports: tuple[PublishedPort, ...] = ()
    # Bridge networks whose interface names don't follow docker0 / br-<id>.
    extra_bridges: tuple[Bridge, ...] = ()
    error: str | None = None
    containers: tuple[str, ...] = field(default=())
    # What Docker says its firewall is (GET /info FirewallBackend.Driver, Docker 29+), if it says.
    firewall_backend: str | None = None
    version: str = ""
