"""What happens to direct routing (connections straight to a container's own address, not
through a published port) in each Docker network: what Docker does there and what fwsync does.
Pure: read off the built Ruleset (the same one the backends render) and Docker's networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fwsync.core.observed import DockerNetwork, DockerState, Family
from fwsync.core.ruleset import Ruleset

Verdict = Literal["rules", "dropped"]


@dataclass(frozen=True)
class DirectRouting:
    """One network and family whose direct routing is worth a line in `status`."""

    network: str  # Docker's names, as Docker hands them over: show them with kernel_text.shown
    bridge: str
    family: Family
    docker: str  # what Docker does there (empty: nothing special)
    fwsync: Verdict  # rules: your rules and the default decide; dropped: the protection drops it
    why: str  # the protection, the routed network, or the rule that says so
    origin: str | None = None  # FILE:LINE of `protect direct-routing off to network NAME`


def _docker_says(net: DockerNetwork, family: Family) -> str:
    mode = net.mode(family)
    if mode == "routed":
        return "routed gateway mode: no NAT, clients connect to container addresses"
    if mode == "nat-unprotected":
        return "nat-unprotected: every container port open to direct routing"
    if net.trusted_host_interfaces:
        return "open to direct routing from " + ", ".join(net.trusted_host_interfaces)
    return ""


def direct_routing(ruleset: Ruleset, docker: DockerState) -> tuple[DirectRouting, ...]:
    """The networks where Docker routes without NAT or reopens direct routing, and those the
    rules take out of the protection, per family. Docker's daemon-wide reopenings
    (allow-direct-routing, DOCKER_INSECURE_NO_IPTABLES_RAW) are not visible through its API;
    they change nothing here, since fwsync decides either way."""
    found: list[DirectRouting] = []
    for net in docker.networks:
        for family in (4, 6):
            fam: Family = 6 if family == 6 else 4
            says = _docker_says(net, fam)
            ok = next((d for d in ruleset.direct_ok
                       if d.family == fam and d.subnet in net.subnets), None)
            if not says and ok is None:
                continue
            if not ruleset.protect_direct_routing:
                found.append(DirectRouting(net.name, net.bridge, fam, says, "rules",
                                           "protect direct-routing off"))
            elif ok is not None:
                found.append(DirectRouting(net.name, net.bridge, fam, says, "rules",
                                           ok.label.removeprefix(f"{ok.origin.short} ")
                                           if ok.origin else ok.label,
                                           str(ok.origin) if ok.origin else None))
            else:
                found.append(DirectRouting(net.name, net.bridge, fam, says, "dropped",
                                           "protect direct-routing"))
    return tuple(found)


# What iptables cannot close by a name-free match (it has no `meta oifkind`), measured with
# tests/kernel/test_direct_catchall.py and tests/e2e/test_bridge_trust.py.
IPTABLES_GAP = ("direct routing into a Docker network created after this apply with a bridge "
                "name of its own (`-o com.docker.network.bridge.name=NAME`) is not judged until "
                "the next apply or the daemon's reconcile: iptables cannot match an interface's "
                "kind (the nftables backend judges every bridge)")


def not_governed(ruleset: Ruleset, backend: str, proxy: str | None = None) -> tuple[str, ...]:
    """What status and doctor say first: the bridges Docker names that fwsync does not trust
    (their traffic is judged like outside traffic), and what the backend cannot close (`proxy`:
    core/build.proxy_gap's note, the INPUT path's window)."""
    lines = [f"{r.note}." for r in ruleset.refused_bridges]
    if backend == "iptables" and ruleset.protect_direct_routing:
        lines.append(IPTABLES_GAP[0].upper() + IPTABLES_GAP[1:] + ".")
    if proxy is not None:
        lines.append(proxy)
    return tuple(lines)
