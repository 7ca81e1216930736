"""Docker's published ports, through the docker SDK, as plain PublishedPort values."""

from __future__ import annotations

import os
from typing import Any

from fwsync.core.observed import DockerState, L4Proto, PublishedPort

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def ports_of(attrs: dict[str, Any]) -> list[PublishedPort]:
    """Bindings from an inspected container. NetworkSettings.Ports holds what Docker really
    bound (`-P` leaves HostConfig.PortBindings empty; a range shows one entry per port)."""
    name = str(attrs.get("Name", "")).lstrip("/")
    image = str((attrs.get("Config") or {}).get("Image", ""))
    settings = attrs.get("NetworkSettings") or {}
    networks = tuple(sorted((settings.get("Networks") or {}).keys()))
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
            ))
    return found


def extra_bridges(networks: list[dict[str, Any]]) -> tuple[str, ...]:
    """Bridge interfaces named by the user (`-o com.docker.network.bridge.name=...`)."""
    names = []
    for net in networks:
        if net.get("Driver") != "bridge":
            continue
        name = (net.get("Options") or {}).get(BRIDGE_NAME_OPTION)
        if name and name != "docker0" and not name.startswith("br-"):
            names.append(name)
    return tuple(sorted(names))


def observe_docker(timeout: int = 10) -> DockerState:
    """Ask Docker (DOCKER_HOST, else the local socket). Never raises: an unreachable Docker is a
    state the core knows how to handle safely."""
    import docker  # the SDK imports requests & co: only pay for it when Docker is asked
    from docker.errors import DockerException, NotFound
    from requests.exceptions import RequestException

    try:
        client = docker.from_env(timeout=timeout)
        try:
            containers = client.api.containers()
            inspected = []
            for summary in containers:
                try:
                    inspected.append(client.api.inspect_container(summary["Id"]))
                except NotFound:
                    continue  # removed between list and inspect: it publishes nothing now
            networks = client.api.networks()
            info = client.api.info()
        finally:
            client.close()
    except (DockerException, RequestException, OSError) as exc:
        where = os.environ.get("DOCKER_HOST") or "the local socket"
        return DockerState(error=f"cannot reach Docker at {where}: {_short_error(exc)}")
    ports = sorted(p for attrs in inspected for p in ports_of(attrs))
    names = tuple(sorted(str(a.get("Name", "")).lstrip("/") for a in inspected))
    firewall = (info.get("FirewallBackend") or {}).get("Driver") or None
    return DockerState(ports=tuple(ports), extra_bridges=extra_bridges(networks),
                       containers=names, firewall_backend=firewall,
                       version=str(info.get("ServerVersion", "")))


def _short_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
