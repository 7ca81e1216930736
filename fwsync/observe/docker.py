"""Docker's published ports, through the docker SDK, as plain PublishedPort values."""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from fwsync.core.kernel_text import shown
from fwsync.core.observed import (
    Bridge,
    DockerNetwork,
    DockerState,
    Family,
    GatewayMode,
    L4Proto,
    PublishedPort,
    SwarmNode,
)
from fwsync.observe.swarm import SERVICE_LABEL, ingress_network, observe_swarm, swarm_node

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
GATEWAY_MODE_OPTION = "com.docker.network.bridge.gateway_mode_ipv{}"
TRUSTED_HOST_INTERFACES_OPTION = "com.docker.network.bridge.trusted_host_interfaces"
# Docker keeps a network option it does not know in the network's Options and ignores it (26.1
# NATs a `routed` network like any other): each is believed from the API version of the engine
# that brought it on. Gateway modes `routed` 27.0 (API 1.46), `nat-unprotected` 28.0 (1.48),
# `isolated` and trusted host interfaces 28.2 (1.50).
GATEWAY_MODES_SINCE_API: dict[str, tuple[int, int]] = {
    "routed": (1, 46), "nat-unprotected": (1, 48), "isolated": (1, 50)}
TRUSTED_HOST_INTERFACES_SINCE_API = (1, 50)
_MODES: dict[str, GatewayMode] = {m: m for m in ("nat", "nat-unprotected", "routed", "isolated")}


def docker_client(timeout: int) -> Any:
    """The one way fwsync opens Docker (DOCKER_HOST, else the local socket). The API version is
    negotiated, never fixed: the SDK asks the daemon's unversioned GET /version and speaks the
    ApiVersion it reports. Docker 29 refuses anything below 1.44; 20.10 knows nothing above
    1.41 (both proven: tests/unit/test_docker_api_version.py, the e2e layer on 20.10-28.5)."""
    import docker  # the SDK imports requests & co: only pay for it when Docker is asked

    return docker.from_env(version="auto", timeout=timeout)


def ports_of(attrs: dict[str, Any]) -> list[PublishedPort]:
    """Bindings from an inspected container. NetworkSettings.Ports holds what Docker really
    bound (`-P` leaves HostConfig.PortBindings empty; a range shows one entry per port)."""
    name = str(attrs.get("Name", "")).lstrip("/")
    image = str((attrs.get("Config") or {}).get("Image", ""))
    service = str(((attrs.get("Config") or {}).get("Labels") or {}).get(SERVICE_LABEL) or "")
    settings = attrs.get("NetworkSettings") or {}
    networks = tuple(sorted((settings.get("Networks") or {}).keys()))
    ipv6 = has_ipv6(settings)
    found: list[PublishedPort] = []
    for key, bindings in (settings.get("Ports") or {}).items():
        if not bindings:
            continue  # exposed but not published
        port_text, _, proto_text = key.partition("/")
        proto: L4Proto = "udp" if proto_text == "udp" else "tcp"
        if proto_text not in ("tcp", "udp"):
            continue  # sctp: fwsync's rules language has no word for it yet
        for binding in bindings:
            host_port = binding.get("HostPort") or ""
            if not host_port.isdigit():
                continue
            found.append(PublishedPort(
                host_ip=binding.get("HostIp") or "0.0.0.0",
                host_port=int(host_port),
                proto=proto,
                container=name,
                container_port=int(port_text),
                container_id=str(attrs.get("Id", ""))[:12],
                image=image,
                networks=networks,
                container_ipv6=ipv6,
                container_addrs=container_addresses(settings),
                service=service,
                mode="host" if service else "",
            ))
    return found


def ports_of_listed(summary: dict[str, Any]) -> list[PublishedPort]:
    """Bindings from one entry of the container list (GET /containers/json), which carries the
    same bindings as NetworkSettings.Ports (one entry per address and port; no PublicPort when
    exposed but not published): observing Docker is then one request, however many containers
    run, instead of one inspect per container (~90 ms with 100 containers)."""
    name = _listed_name(summary)
    image = str(summary.get("Image", ""))
    # A Swarm task publishing in host mode: its binding is the service's port on this node.
    service = str((summary.get("Labels") or {}).get(SERVICE_LABEL) or "")
    settings = summary.get("NetworkSettings") or {}
    networks = tuple(sorted((settings.get("Networks") or {}).keys()))
    ipv6 = has_ipv6(settings)
    found: list[PublishedPort] = []
    for binding in summary.get("Ports") or []:
        proto_text = binding.get("Type")
        public = binding.get("PublicPort")
        if proto_text not in ("tcp", "udp") or not isinstance(public, int):
            continue  # exposed but not published, or sctp (no word for it in the rules yet)
        proto: L4Proto = "udp" if proto_text == "udp" else "tcp"
        found.append(PublishedPort(
            host_ip=binding.get("IP") or "0.0.0.0",
            host_port=public,
            proto=proto,
            container=name,
            container_port=int(binding.get("PrivatePort") or 0),
            container_id=str(summary.get("Id", ""))[:12],
            image=image,
            networks=networks,
            container_ipv6=ipv6,
            container_addrs=container_addresses(settings),
            service=service,
            mode="host" if service else "",
        ))
    return found


def container_addresses(settings: dict[str, Any]) -> tuple[str, ...]:
    """The container's addresses on its networks (IPv4 and global IPv6), as Docker reports them
    in NetworkSettings.Networks (the list and the inspect API both carry it); only real
    addresses are believed."""
    found = [str(a) for net in (settings.get("Networks") or {}).values()
             for a in ((net or {}).get("IPAddress"), (net or {}).get("GlobalIPv6Address")) if a]
    return tuple(sorted(dict.fromkeys(a for a in found if _is_address(a))))


def has_ipv6(settings: dict[str, Any]) -> bool:
    """Any network of the container gives it a global IPv6 address (the inspect and the list
    API both carry NetworkSettings.Networks.*.GlobalIPv6Address)."""
    return any((net or {}).get("GlobalIPv6Address")
               for net in (settings.get("Networks") or {}).values())


def api_at_least(api_version: str, wanted: tuple[int, int]) -> bool:
    try:
        major, minor = (int(x) for x in api_version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= wanted


def bridge_of(net: dict[str, Any]) -> str:
    """The host interface of a bridge network: the name the user gave it, else Docker's
    `br-` and the first 12 characters of the network's id (docker0 names itself)."""
    named = (net.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    return str(named) if named else f"br-{str(net.get('Id', ''))[:12]}"


def networks_of(listed: list[dict[str, Any]], api_version: str) -> tuple[DockerNetwork, ...]:
    """Docker's bridge networks (GET /networks), with the gateway modes the engine honours."""
    found = []
    for net in listed:
        if net.get("Driver") != "bridge":
            continue
        bridge = bridge_of(net)
        options = net.get("Options") or {}
        modes: list[tuple[Family, GatewayMode]] = []
        for family in (4, 6):
            mode = _MODES.get(str(options.get(GATEWAY_MODE_OPTION.format(family)) or ""))
            if mode is not None and mode != "nat" and api_at_least(
                    api_version, GATEWAY_MODES_SINCE_API[mode]):
                modes.append((family, mode))
        trusted = tuple(i for i in str(options.get(TRUSTED_HOST_INTERFACES_OPTION) or "")
                        .replace(",", ":").split(":") if i) if api_at_least(
            api_version, TRUSTED_HOST_INTERFACES_SINCE_API) else ()
        subnets = tuple(n for c in (net.get("IPAM") or {}).get("Config") or []
                        if isinstance(c, dict) and (n := _subnet(c.get("Subnet"))))
        found.append(DockerNetwork(name=str(net.get("Name", "")), bridge=bridge,
                                   gateway_modes=tuple(modes), subnets=subnets,
                                   trusted_host_interfaces=trusted,
                                   user_named=bool(options.get(BRIDGE_NAME_OPTION))))
    return tuple(sorted(found, key=lambda n: n.name))


def user_named_endpoints(listed: Iterable[dict[str, Any]],
                         inspect: Callable[[str], dict[str, Any] | None]) -> dict[str, int]:
    """For each bridge network whose bridge its creator named: how many endpoints Docker has on
    it (GET /networks/ID: containers, and Swarm's sandboxes on docker_gwbridge), each one port
    of the bridge. What bounds the ports an adopted interface may have (core/bridges.py); the
    list API leaves Containers empty, so these few are inspected. `inspect` answers None for a
    network it could not inspect (removed meanwhile): not counted."""
    counts: dict[str, int] = {}
    for net in listed:
        if net.get("Driver") != "bridge" or not (net.get("Options") or {}).get(
                BRIDGE_NAME_OPTION):
            continue
        found = inspect(str(net.get("Id", "")))
        if found is not None:
            counts[str(net.get("Name", ""))] = len(found.get("Containers") or {})
    return counts


def with_endpoints(networks: Iterable[DockerNetwork], counts: dict[str, int]
                   ) -> tuple[DockerNetwork, ...]:
    return tuple(replace(n, endpoints=counts.get(n.name)) for n in networks)


def routed_ports(summary: dict[str, Any], networks: Iterable[DockerNetwork]
                 ) -> list[PublishedPort]:
    """The container ports Docker opens on networks in `routed` gateway mode (27+). Docker
    lists such a mapping with its address family (`IP` 0.0.0.0 or ::) but no PublicPort: no
    host port exists. Clients connect to the container's address on that network."""
    routed = {n.name: n for n in networks}
    settings = summary.get("NetworkSettings") or {}
    attached = settings.get("Networks") or {}
    template = PublishedPort("", 0, "tcp", _listed_name(summary), 0,
                             container_id=str(summary.get("Id", ""))[:12],
                             image=str(summary.get("Image", "")),
                             networks=tuple(sorted(attached)), container_ipv6=has_ipv6(settings))
    found: list[PublishedPort] = []
    for binding in summary.get("Ports") or []:
        proto_text, ip = binding.get("Type"), binding.get("IP")
        if proto_text not in ("tcp", "udp") or not ip or isinstance(binding.get("PublicPort"),
                                                                     int):
            continue
        family: Family = 6 if ":" in str(ip) else 4
        port = int(binding.get("PrivatePort") or 0)
        for name, endpoint in sorted(attached.items()):
            net = routed.get(name)
            if net is None or net.mode(family) != "routed":
                continue
            address = (endpoint or {}).get("IPAddress" if family == 4 else "GlobalIPv6Address")
            if not address or not _is_address(str(address)):
                continue
            proto: L4Proto = "udp" if proto_text == "udp" else "tcp"
            found.append(replace(template, host_ip=str(address), host_port=port, proto=proto,
                                 container_port=port, routed=name))
    return found


def _subnet(value: Any) -> str:
    """A subnet Docker reports, as canonical CIDR text ("" if it is not one: not believed)."""
    try:
        return str(ipaddress.ip_network(str(value), strict=False)) if value else ""
    except ValueError:
        return ""


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def extra_bridges(networks: list[dict[str, Any]]) -> tuple[Bridge, ...]:
    """Bridge networks whose interface is named by the user (`-o
    com.docker.network.bridge.name=...`), as Docker reports them: the name is not checked here
    (the builder decides what it can write to the kernel), the subnets are what Docker's IPAM
    gave the network."""
    found = []
    for net in networks:
        if net.get("Driver") != "bridge":
            continue
        name = (net.get("Options") or {}).get(BRIDGE_NAME_OPTION)
        if not isinstance(name, str) or not name or name == "docker0" or name.startswith("br-"):
            continue
        configs = (net.get("IPAM") or {}).get("Config") or []
        subnets = tuple(str(c["Subnet"]) for c in configs
                        if isinstance(c, dict) and isinstance(c.get("Subnet"), str))
        found.append(Bridge(name=name, network=str(net.get("Name", "")), subnets=subnets))
    return tuple(sorted(found))


def _missing_socket() -> str | None:
    """The unix socket Docker would be asked on, when it does not exist (else None)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return None
    path = host.removeprefix("unix://")
    return None if os.path.exists(path) else host


def observe_docker(timeout: int = 10, *, client: Any = None, info: bool = True,
                   swarm: SwarmNode | None = None) -> DockerState:
    """_ask_docker, with the host's interfaces as they are now (observe/host_links.py): what
    decides whether a network's bridge is trusted (core/bridges.py), Docker reachable or not;
    and dockerd's cgroup (observe/proxy_cgroup.py), for the INPUT path's catch-all."""
    from fwsync.observe.host_links import with_links
    from fwsync.observe.proxy_cgroup import with_proxy_cgroup

    return with_proxy_cgroup(with_links(_ask_docker(timeout, client=client, info=info,
                                                    swarm=swarm)),
                             os.environ.get("DOCKER_HOST"))


def _ask_docker(timeout: int = 10, *, client: Any = None, info: bool = True,
                swarm: SwarmNode | None = None) -> DockerState:
    """Ask Docker (DOCKER_HOST, else the local socket). Never raises: an unreachable Docker is a
    state the core knows how to handle safely. A long-running caller (the daemon) may pass the
    DockerClient it keeps (not closed here), and `info=False` to skip GET /info (~10 ms), whose
    firewall backend and version only choosing a backend needs; `swarm` is then this node's
    place in a swarm as last seen (the networks show whether it still is in one)."""
    if client is None and (missing := _missing_socket()) is not None:
        # Nothing listens there: say so without importing the SDK (~70 ms of requests & co).
        return DockerState(error=f"cannot reach Docker at {shown(missing)}: no such socket")
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    own = client is None
    try:
        if own:
            client = docker_client(timeout)
        try:
            containers = client.api.containers()
            networks = client.api.networks()
            endpoints = user_named_endpoints(networks, _inspector(client))
            details = client.api.info() if info else {}
            # Without /info, the swarm as last seen, while the networks still show its mesh.
            node = swarm_node(details) if info else \
                swarm if ingress_network(networks) is not None else None
            swarm_view = observe_swarm(client, node, networks)
        finally:
            if own:
                client.close()
    except (DockerException, RequestException, OSError, ValueError) as exc:
        # ValueError: a DOCKER_HOST the SDK cannot even parse (`tcp://[::1`) is unreachable too.
        where = shown(os.environ.get("DOCKER_HOST") or "the local socket")
        return DockerState(error=f"cannot reach Docker at {where}: {_short_error(exc)}")
    bridges = with_endpoints(networks_of(networks, str(getattr(client.api, "api_version", "")
                                                       or "")), endpoints)
    routed = [n for n in bridges if n.routed_families()]
    listed = [ports_of_listed(summary) + (routed_ports(summary, routed) if routed else [])
              for summary in containers]
    ports = sorted([p for found in listed for p in found] + list(swarm_view.ports))
    names = tuple(sorted(_listed_name(summary) for summary in containers))
    firewall = (details.get("FirewallBackend") or {}).get("Driver") or None
    return DockerState(ports=tuple(ports), extra_bridges=extra_bridges(networks),
                       containers=names, firewall_backend=firewall,
                       version=str(details.get("ServerVersion", "")), swarm=swarm_view.node,
                       services=swarm_view.services, notes=swarm_view.notes,
                       mesh_chain=swarm_view.mesh_chain,
                       mesh_pending=swarm_view.mesh_pending, seen_at=time.time(),
                       networks=bridges)


def _inspector(client: Any) -> Callable[[str], dict[str, Any] | None]:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    def inspect(network_id: str) -> dict[str, Any] | None:
        try:
            found = client.api.inspect_network(network_id)
        except (DockerException, RequestException):
            return None
        return found if isinstance(found, dict) else None
    return inspect


def _listed_name(summary: dict[str, Any]) -> str:
    names = [str(n).lstrip("/") for n in summary.get("Names") or []]
    return next((n for n in names if "/" not in n), names[0] if names else "")


def _short_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
