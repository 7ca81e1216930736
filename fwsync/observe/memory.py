"""What Docker last reported when fwsync enforced rules for it, kept on disk.

With Docker unreachable (its socket gone, dockerd stopped or hung), an apply, a plan and a
daemon started then build the rules from this instead of from nothing: a `deny ... to
container` rule and the bridges Docker had named stay in the kernel (core/observed.py,
as_remembered). Written after every apply and reconcile that succeeded, whole to a temporary
file and renamed over, so a reader never sees half of it.

/var/lib/fwsync/docker.json by default (it must outlive a reboot: at boot fwsync starts before
Docker, and the containers come back with the ports they had); FWSYNC_DOCKER_STATE overrides it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fwsync.core.observed import (
    Bridge,
    DockerNetwork,
    DockerState,
    Family,
    GatewayMode,
    PublishedPort,
    SwarmNode,
)
from fwsync.readfile import read_limited

DEFAULT_MEMORY = Path("/var/lib/fwsync/docker.json")
FORMAT_VERSION = 1
MAX_BYTES = 64 << 20  # a state of ~100k published ports; anything bigger is not ours


def memory_path() -> Path:
    return Path(os.environ.get("FWSYNC_DOCKER_STATE") or DEFAULT_MEMORY)


def remember(state: DockerState, path: Path | None = None) -> str | None:
    """Keep `state` (a fresh observation, or `DockerState()` when Docker has never answered);
    an error message when it cannot be written (the apply itself stands)."""
    path = path or memory_path()
    data = {
        "format_version": FORMAT_VERSION, "seen_at": state.seen_at,
        "ports": [{**asdict(p), "networks": list(p.networks)} for p in state.ports],
        "extra_bridges": [{**asdict(b), "subnets": list(b.subnets)}
                          for b in state.extra_bridges],
        "containers": list(state.containers), "firewall_backend": state.firewall_backend,
        "version": state.version, "services": list(state.services),
        "swarm": None if state.swarm is None else asdict(state.swarm),
        "networks": [{"name": n.name, "bridge": n.bridge,
                      "gateway_modes": [list(m) for m in n.gateway_modes],
                      "subnets": list(n.subnets),
                      "trusted_host_interfaces": list(n.trusted_host_interfaces)}
                     for n in state.networks],
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return f"cannot keep what Docker reported in {path}: {exc.strerror or exc}"
    return None


def recall(path: Path | None = None) -> DockerState | None:
    """What `remember` kept, or None when there is nothing usable (no file, not fwsync's
    format): then fwsync knows nothing of Docker, and says so."""
    path = path or memory_path()
    try:
        return _state(json.loads(read_limited(path, MAX_BYTES, "fwsync's Docker memory")))
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None


def _state(data: Any) -> DockerState | None:
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return None
    seen_at = data["seen_at"]
    swarm = data["swarm"]
    return DockerState(
        ports=tuple(_port(p) for p in data["ports"]),
        extra_bridges=tuple(Bridge(name=str(b["name"]), network=str(b["network"]),
                                   subnets=tuple(str(s) for s in b["subnets"]))
                            for b in data["extra_bridges"]),
        containers=tuple(str(c) for c in data["containers"]),
        firewall_backend=_text_or_none(data["firewall_backend"]),
        version=str(data["version"]),
        swarm=None if swarm is None else SwarmNode(manager=bool(swarm["manager"]),
                                                   node_addr=str(swarm["node_addr"])),
        services=tuple(str(s) for s in data["services"]),
        seen_at=None if seen_at is None else float(seen_at),
        # Added later within format 1: a file without them knew of no networks.
        networks=tuple(_network(n) for n in data.get("networks", ())))


_MODES: dict[str, GatewayMode] = {m: m for m in ("nat", "nat-unprotected", "routed", "isolated")}


def _network(n: dict[str, Any]) -> DockerNetwork:
    modes: list[tuple[Family, GatewayMode]] = []
    for family, mode in n["gateway_modes"]:
        if family in (4, 6) and str(mode) in _MODES:
            modes.append((6 if family == 6 else 4, _MODES[str(mode)]))
    return DockerNetwork(name=str(n["name"]), bridge=str(n["bridge"]),
                         gateway_modes=tuple(modes), subnets=tuple(str(s) for s in n["subnets"]),
                         trusted_host_interfaces=tuple(str(i)
                                                       for i in n["trusted_host_interfaces"]))


def _port(p: dict[str, Any]) -> PublishedPort:
    mode = str(p["mode"])
    ipv6 = p["container_ipv6"]
    return PublishedPort(
        host_ip=str(p["host_ip"]), host_port=int(p["host_port"]),
        proto="udp" if p["proto"] == "udp" else "tcp", container=str(p["container"]),
        container_port=int(p["container_port"]), container_id=str(p["container_id"]),
        image=str(p["image"]), networks=tuple(str(n) for n in p["networks"]),
        container_ipv6=None if ipv6 is None else bool(ipv6), service=str(p["service"]),
        mode="ingress" if mode == "ingress" else "host" if mode == "host" else "",
        routed=str(p.get("routed", "")))


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
