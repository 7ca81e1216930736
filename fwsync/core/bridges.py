"""Which Docker bridges fwsync trusts: traffic a Docker network's own containers send (egress,
container to container, to a published port) is not judged, and is recognised by facts an
outsider cannot choose. Pure.

A bridge's name is chosen by whoever may run `docker network create` (`-o
com.docker.network.bridge.name=br-lan` makes Docker adopt the host's uplink bridge), so a name
is never enough. A network's bridge is trusted when the host shows it as one Docker made for
that network:

- it exists and is a bridge;
- every address on it (link-local aside) lies in the network's subnets (Docker puts only the
  gateway there; the host's uplink carries the host's own address);
- every route out of it (link-local aside) goes to one of those subnets (the uplink carries the
  default route, or the LAN's);
- each of its ports is a veth (a container's link; an uplink's port is a NIC, or a bond...);
- when its name was chosen by the network's creator (Docker then adopts an interface that
  already had it), it has no more ports than Docker has endpoints on the network.

And even then only connections from the network's subnets, on that bridge, per family, are
exempt (`iifname B ip saddr S`): a neighbour on a trusted bridge with an address of its own
choosing is judged like outside traffic. A bridge that fails is reported and not trusted:
what comes from it is judged as if it came from outside.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fwsync.core.kernel_text import shown
from fwsync.core.observed import DockerNetwork, DockerState, Family, LinkFacts
from fwsync.rules.text import literal_problem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LINK_LOCAL = (ipaddress.ip_network("fe80::/10"), ipaddress.ip_network("169.254.0.0/16"))
# The kinds of link Docker (and only something that acts for it: a container runtime) makes a
# bridge's port: a container's veth.
PORT_KINDS = ("veth",)


@dataclass(frozen=True, order=True)
class TrustedBridge:
    """A Docker network's bridge that passed the host check: connections from `subnets` that
    arrive on `name` are the network's own."""

    name: str
    network: str
    subnets: tuple[str, ...]  # CIDRs, both families

    def subnets_for(self, family: Family) -> tuple[str, ...]:
        return tuple(s for s in self.subnets if (":" in s) == (family == 6))


@dataclass(frozen=True, order=True)
class RefusedBridge:
    """A Docker network's bridge that failed the host check, and why."""

    name: str
    network: str
    why: str

    @property
    def note(self) -> str:
        return (f"Docker network {shown(self.network)!r}: its bridge {shown(self.name)!r} is not "
                f"trusted ({self.why}); connections arriving on it are judged like outside "
                "traffic, and its containers' own connections to published ports too")


def _nets(cidrs: Iterable[str]) -> list[Network]:
    out: list[Network] = []
    for text in cidrs:
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue  # not an address: not believed
    return out


def _inside(net: Network, subnets: list[Network]) -> bool:
    return any(net.version == s.version and net.subnet_of(s) for s in subnets  # type: ignore[arg-type]
               ) or any(net.version == ll.version and net.subnet_of(ll)  # type: ignore[arg-type]
                        for ll in _LINK_LOCAL)


def check_bridge(network: DockerNetwork, links: tuple[LinkFacts, ...] | None) -> str | None:
    """Why `network`'s bridge is not one Docker made for it (None: it passes)."""
    if links is None:
        return "the host's interfaces could not be read"
    subnets = _nets(network.subnets)
    if not subnets:
        return "Docker reports no subnet for the network"
    by_name = {link.name: link for link in links}
    link = by_name.get(network.bridge)
    if link is None:
        return "no such interface on this host"
    if link.kind != "bridge":
        return f"it is a {link.kind or 'device'}, not a bridge"
    for text in link.addresses:
        addr = ipaddress.ip_interface(text)
        if not _inside(ipaddress.ip_network(addr.ip), subnets):
            return f"it carries the address {addr}, outside the network's subnets"
    for text in link.routes:
        if not _inside(ipaddress.ip_network(text), subnets):
            return f"the host routes {text} through it, outside the network's subnets"
    ports = [port for port in links if port.master == link.name]
    for port in ports:
        if port.kind not in PORT_KINDS:
            return f"its port {shown(port.name)!r} is a {port.kind or 'device'}, not a veth"
    if network.user_named and network.endpoints is not None and \
            len(ports) > network.endpoints:
        # A name of the user's: Docker adopts an interface that already had it. Each of the
        # network's endpoints (a container, a Swarm sandbox) has one port; one more is a link
        # Docker did not make (20.10 strips the adopted uplink's IPv4 address, so the
        # addresses alone pass).
        return (f"it has {len(ports)} port{'s' if len(ports) != 1 else ''} and Docker reports "
                f"{network.endpoints} endpoint{'s' if network.endpoints != 1 else ''} "
                "on the network: a link Docker did not make")
    return None


def judge_bridges(networks: Iterable[DockerNetwork], links: tuple[LinkFacts, ...] | None
                  ) -> tuple[tuple[TrustedBridge, ...], tuple[RefusedBridge, ...]]:
    """Docker's bridge networks → the bridges trusted, and those refused with why. A bridge
    whose name cannot be written to the kernel literally is neither (core/build.py governs it
    by its subnets); two networks naming one bridge are both refused (Docker gives each
    network its own)."""
    trusted: list[TrustedBridge] = []
    refused: list[RefusedBridge] = []
    nets = [n for n in networks if literal_problem(n.bridge) is None]
    counts: dict[str, int] = {}
    for net in nets:
        counts[net.bridge] = counts.get(net.bridge, 0) + 1
    for net in nets:
        why = ("another Docker network names the same bridge" if counts[net.bridge] > 1
               else check_bridge(net, links))
        if why is None:
            canonical = tuple(str(n) for n in _nets(net.subnets))
            trusted.append(TrustedBridge(net.bridge, net.name, canonical))
        else:
            refused.append(RefusedBridge(net.bridge, net.name, why))
    return tuple(sorted(set(trusted))), tuple(sorted(set(refused)))


# The names Docker itself gives bridges (docker0, br- and 12 hex digits of the network's id,
# Swarm's docker_gwbridge): a bridge so named is never taken for the host's own. This only
# ever judges more (core/build.host_bridges), it exempts nothing.
_DOCKER_NAMED = re.compile(r"docker0|docker_gwbridge|br-[0-9a-f]{12}")


def host_bridges(docker: DockerState, refused: Iterable[RefusedBridge]) -> tuple[str, ...]:
    """The host's own bridges as it shows them now: bridges no Docker network names (or whose
    network's check failed: an uplink Docker adopted is still the uplink), and not named as
    Docker names its own. Routing into them (a router's LAN or WAN) is the host's business, not
    Docker's: the catch-all that judges every new non-DNATed connection routed into a bridge
    leaves them out. Any bridge made later is judged, fail closed, until the next apply; and
    when nothing is known of Docker's networks (Docker cannot be asked, nothing remembered),
    every bridge is: one Docker made would pass for the host's."""
    if docker.links is None or docker.error is not None:
        return ()
    docker_made = {n.bridge for n in docker.networks} - {r.name for r in refused}
    return tuple(sorted(
        link.name for link in docker.links
        if link.kind == "bridge" and link.name not in docker_made
        and not _DOCKER_NAMED.fullmatch(link.name) and literal_problem(link.name) is None))
