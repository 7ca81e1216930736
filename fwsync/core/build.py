"""Policy + observed Docker state → the desired, backend-neutral Ruleset. Pure."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from fwsync.core.bridges import host_bridges, judge_bridges
from fwsync.core.kernel_text import literal_problem, shown
from fwsync.core.observed import Bridge, DockerNetwork, DockerState, PublishedPort
from fwsync.core.ruleset import (
    L4,
    AddrSet,
    DirectOk,
    Family,
    InputPort,
    KernelRule,
    Match,
    Ruleset,
)
from fwsync.rules.addresses import disjoint_entries, entry_of, fast_entry
from fwsync.rules.limits import MAX_KERNEL_RULES, count
from fwsync.rules.model import (
    AddressSet,
    Diagnostic,
    Endpoint,
    Network,
    Origin,
    Policy,
    PortRange,
    Rule,
)

FAMILIES: tuple[Family, ...] = (4, 6)
# A Docker network's name as Docker's own name rule has it: only such a name goes into a kernel
# comment (Docker hands names over; anything else is left out, never escaped).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class BuildResult:
    ruleset: Ruleset
    notes: tuple[str, ...]  # things the user should know (unresolved containers, Docker down)
    # Errors that refuse the policy before any kernel call: the rules expand to more kernel
    # rules than fwsync's limit (limits.MAX_KERNEL_RULES). The ruleset is then incomplete.
    problems: tuple[Diagnostic, ...] = ()


def container_matches(pattern: str, name: str) -> bool:
    return fnmatchcase(name, pattern) if pattern.endswith("*") else name == pattern


def named_by(dst: Endpoint, port: PublishedPort) -> bool:
    """The binding belongs to what a `to container NAME` / `to service NAME` destination names: a
    container's own (a Swarm task's host-mode binding included), or a service's (its mesh port,
    which no container on this node holds, and its tasks' host-mode bindings here)."""
    if dst.container is not None:
        return bool(port.container) and container_matches(dst.container, port.container)
    if dst.service is not None:
        return bool(port.service) and container_matches(dst.service, port.service)
    return False


def unresolved(dst: Endpoint, docker: DockerState) -> str | None:
    """Why a `to container` / `to service` destination names no binding on this node (None when
    it names one, or names nothing by Docker). Such a rule matches nothing: it never widens."""
    if dst.selector is None or docker.error is not None:
        return None
    if any(named_by(dst, p) for p in docker.ports):
        return None
    kind, pattern = dst.selector
    if kind == "container":
        return f"no running container matches {pattern!r}"
    if docker.swarm is None:
        return f"no Swarm service matches {pattern!r}: this node is in no swarm"
    known = [n for n in docker.services if container_matches(pattern, n)]
    if known:
        return f"Swarm service {', '.join(known)} publishes no port on this node"
    where = "" if docker.swarm.manager else (" this worker knows of (a worker sees the services "
                                             "its ingress network serves; a manager sees all)")
    return f"no Swarm service{where} matches {pattern!r}"


def split_set(aset: AddressSet, family: Family) -> tuple[str, ...]:
    """The set's networks of one family, merged so that no two overlap (the kernel rejects that)."""
    return disjoint_entries(aset.entries, aset.spans, family)


def split_cidrs(cidrs: Iterable[str], family: Family) -> tuple[str, ...]:
    """split_set for CIDR texts (the sources of rules merged into one set)."""
    pairs = [fast_entry(c) or entry_of(ipaddress.ip_network(c)) for c in cidrs]
    return disjoint_entries((e for e, _ in pairs), (s for _, s in pairs), family)


def build_ruleset(policy: Policy, docker: DockerState) -> BuildResult:
    notes: list[str] = []
    if docker.stale is not None:
        when = ("Docker has not answered fwsync yet, so nothing is known of it"
                if docker.seen_at is None else
                f"the rules use what it reported at {_utc(docker.seen_at)} "
                f"({len(docker.ports)} published ports, {len(docker.extra_bridges)} bridges of "
                "its own)")
        notes.append(f"Docker could not be asked ({docker.stale}): {when}; `container` rules "
                     "follow Docker again once it answers.")
    if docker.error is not None:
        notes.append(
            f"Docker could not be asked ({docker.error}): `container` and `service` rules match "
            "nothing until it can; every other rule and the default are enforced."
        )
    notes.extend(docker.notes)
    sets = tuple(
        AddrSet(name=name, family=family, elements=elements)
        for name, aset in policy.sets.items()
        for family in FAMILIES
        if (elements := split_set(aset, family))
    )
    set_families = {(s.name, s.family) for s in sets}
    used_sets: set[tuple[str, Family]] = set()
    rules: list[KernelRule] = []
    seen: set[KernelRule] = set()  # a set: a list's `in` made 10k rules quadratic
    problems: list[Diagnostic] = []
    for index, rule in enumerate(policy.rules):
        if problems:
            break
        if (why := unresolved(rule.dst, docker)) is not None:
            notes.append(f"{rule.origin}: {why}: the rule matches nothing (it never widens "
                         "access).")
        if rule.dst.network is not None and docker.error is None and not _networks(
                rule.dst.network, docker.networks):
            notes.append(f"{rule.origin}: no Docker network matches {rule.dst.network!r}: the "
                         "rule matches nothing (it never widens access).")
        for match in expand(rule, docker.ports, set_families, docker.networks):
            if len(rules) >= MAX_KERNEL_RULES:
                # Stop here: expanding on (port lists times source ports times bindings) is
                # what took gigabytes.
                problems.append(Diagnostic(
                    file=rule.origin.file, line=rule.origin.line, col=1, severity="error",
                    message=f"with this rule the rules expand to more than "
                            f"{count(MAX_KERNEL_RULES)} kernel rules (one per family, protocol, "
                            "port list item, source port and container binding): fwsync's "
                            "limit; use fewer ports or a set"))
                break
            if match.sset is not None:
                used_sets.add((match.sset, match.family))
            kernel_rule = KernelRule(
                match=match, action=rule.action, origin=rule.origin, index=index,
                comment=rule.comment,
            )
            if kernel_rule not in seen:
                seen.add(kernel_rule)
                rules.append(kernel_rule)
    subnets = _bridges(docker.extra_bridges, notes)
    trusted, refused = judge_bridges(docker.networks, docker.links)
    notes.extend(f"{r.note}." for r in refused)
    ruleset = Ruleset(
        rules=tuple(rules),
        sets=tuple(s for s in sets if (s.name, s.family) in used_sets),
        default=policy.default,
        default_origin=policy.default_origin,
        protect_direct_routing=policy.protect_direct_routing,
        protect_localhost_publish=policy.protect_localhost_publish,
        bridges=trusted,
        bridge_subnets=subnets,
        refused_bridges=refused,
        direct_ok=_direct_ok(policy, docker, {b.name for b in trusted}, notes),
        host_bridges=host_bridges(docker, refused),
        input_ports=input_ports(docker.ports),
    )
    return BuildResult(ruleset=ruleset, notes=tuple(notes), problems=tuple(problems))


def _bridges(bridges: Iterable[Bridge], notes: list[str]) -> tuple[str, ...]:
    """Docker's bridges with names of the user's whose names can't be written → the subnets to
    judge connections into them by. A name is only written to the kernel when both backends
    read it literally: a bridge called `"+"` became `-i +` (every interface: RETURN), one called
    `v*` matched the outside links in nftables, and `*` made every nftables apply fail. Such a
    bridge is still governed, by its subnets (and its published ports, like any, by the forward
    chain's DNAT catch-all), and said so on every plan, apply and reconcile. (The others are
    trusted, or not, by what the host shows of them: core/bridges.py.)"""
    subnets: list[str] = []
    for bridge in sorted(set(bridges)):
        problem = literal_problem(bridge.name)
        if problem is None:
            continue
        nets = [n for n in (_network(s) for s in bridge.subnets) if n is not None]
        subnets.extend(str(n) for n in nets)
        governed = (f"connections into it are judged by its subnet{'s' if len(nets) > 1 else ''}"
                    f" {', '.join(str(n) for n in nets)}" if nets else
                    "Docker reports no subnet for it, so every DNATed connection is judged")
        notes.append(
            f"Docker network {shown(bridge.network)!r} has a bridge named "
            f"{shown(bridge.name)!r}, which fwsync does not write into the kernel ({problem}): "
            f"{governed}; its containers' own connections to other Docker networks are judged "
            "like connections from outside. Rename the bridge to govern it by name.")
    return tuple(dict.fromkeys(subnets))


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _network(text: str) -> Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None  # not an address: Docker's answer is not trusted either


def _networks(pattern: str, networks: Iterable[DockerNetwork]) -> list[DockerNetwork]:
    return [n for n in networks if container_matches(pattern, n.name)]


def _direct_ok(policy: Policy, docker: DockerState, trusted: set[str], notes: list[str]
               ) -> tuple[DirectOk, ...]:
    """Where direct routing goes to the rules instead of being dropped: networks the user made
    `routed` (Docker 27+: direct routing is their only way in), and those the rules name in
    `protect direct-routing off to network NAME`. Everything else stays protected, including
    what Docker itself reopens (28's nat-unprotected, allow-direct-routing, trusted host
    interfaces, DOCKER_INSECURE_NO_IPTABLES_RAW)."""
    if not policy.protect_direct_routing:
        return ()
    found: dict[tuple[Family, str], DirectOk] = {}

    def add(net: DockerNetwork, families: Iterable[Family], why: str,
            origin: Origin | None) -> None:
        if net.bridge not in trusted:
            notes.append(f"{origin or 'Docker'}: direct routing into network "
                         f"{shown(net.name)!r} stays dropped ({why}): its bridge "
                         f"{shown(net.bridge)!r} is not trusted.")
            return
        for cidr in net.subnets:
            family: Family = 6 if ":" in cidr else 4
            if family in families:
                name = net.name if _PLAIN_NAME.fullmatch(net.name) else ""
                found.setdefault((family, cidr), DirectOk(family, cidr, name, why, origin,
                                                          net.bridge))

    for net in docker.networks:
        add(net, net.routed_families(), "routed network", None)
    for scope in policy.direct_routing_off:
        nets = _networks(scope.network, docker.networks)
        if not nets and docker.error is None:
            notes.append(f"{scope.origin}: no Docker network matches {scope.network!r}: direct "
                         "routing stays dropped everywhere.")
        for net in nets:
            add(net, FAMILIES, "protect direct-routing off to network", scope.origin)
    return tuple(found.values())


def input_ports(ports: Iterable[PublishedPort]) -> tuple[InputPort, ...]:
    """Every binding with a host port, for the INPUT path (docker-proxy's listening ports).
    A DNATed connection never gets there (Docker rewrote its destination before routing), so
    these rules only see what docker-proxy serves: fwsync does not need to know whether the
    container has IPv6 or Docker's ip6tables is on to judge it."""
    found: dict[Match, InputPort] = {}
    for p in sorted(ports):
        if p.routed:
            continue  # no host port: clients connect to the container (FORWARD path)
        family: Family = 6 if p.family == 6 else 4
        daddr = None if p.all_addresses else str(ipaddress.ip_network(p.host_ip))
        match = Match(family=family, proto=p.proto, daddr=daddr,
                      dport=PortRange(low=p.host_port, high=p.host_port))
        found.setdefault(match, InputPort(match, p))
    return tuple(found.values())


def _sources(src: Endpoint, family: Family, set_families: set[tuple[str, Family]]
             ) -> list[tuple[str | None, str | None]]:
    """(saddr, sset) alternatives for one family; empty when the source has nothing of it."""
    if src.net is not None:
        return [(str(src.net), None)] if src.net.version == family else []
    if src.set is not None:
        return [(None, src.set)] if (src.set, family) in set_families else []
    return [(None, None)]


def _protos(rule: Rule, has_ports: bool) -> list[L4 | None]:
    if rule.proto != "any":
        return [rule.proto]
    # A port only means something for a protocol that has ports: `any` with a port is tcp + udp.
    return ["tcp", "udp"] if has_ports else [None]


def _dnat_targets(rule: Rule, port: PublishedPort, family: Family
                  ) -> tuple[tuple[str | None, bool], ...]:
    """The container addresses an allow (or limit) `to container` also matches after Docker's
    DNAT: what identifies the container when the packet passes, so that a port another
    container took since the last apply is not opened to whom the rule names. Not for a deny
    (narrowing it would widen access), a routed binding (its address is the destination
    already), a service's mesh port, nor a family the container has no address of (that
    binding goes through docker-proxy on the host's INPUT path: no DNAT). (dnat_daddr,
    not_dnat) pairs: one per address, and one for connections Docker did not DNAT (docker-proxy
    serves them, e.g. IPv6 while Docker's ip6tables is off), whose destination is the host."""
    if rule.dst.container is None or rule.action not in ("allow", "limit") or port.routed:
        return ((None, False),)
    found = tuple((str(ipaddress.ip_network(a)), False) for a in port.container_addrs
                  if (":" in a) == (family == 6))
    return (*found, (None, True)) if found else ((None, False),)


def _binding_targets(rule: Rule, ports: Iterable[PublishedPort]
                     ) -> Iterator[tuple[Family, L4, str | None, PortRange, PublishedPort]]:
    """(family, proto, daddr, dport) for each published binding a `to container` or `to service`
    rule names (for `to network`, `ports` are already the bindings it names)."""
    for p in sorted(ports):
        if rule.dst.selector is not None and not named_by(rule.dst, p):
            continue
        if rule.proto != "any" and rule.proto != p.proto:
            continue
        dport = PortRange(low=p.host_port, high=p.host_port)
        if rule.dst.ports and not any(r.covers(dport) for r in rule.dst.ports):
            continue
        family: Family = 6 if p.family == 6 else 4
        daddr = None if p.all_addresses else str(ipaddress.ip_network(p.host_ip))
        yield family, p.proto, daddr, dport, p


def _network_targets(rule: Rule, ports: Iterable[PublishedPort],
                     networks: Iterable[DockerNetwork]) -> tuple[list[PublishedPort],
                                                                 list[tuple[Family, str]]]:
    """What `to network NAME` selects: the published bindings of the containers on it (their
    host ports, DNATed or served by docker-proxy), and its subnets — connections straight to a
    container's address on it, which reach the rules where Docker routes without NAT
    (`routed`) or where the direct-routing protection leaves them to the rules (elsewhere
    they are dropped first, and a DNATed connection's original destination is a host
    address, never in the subnet)."""
    assert rule.dst.network is not None
    nets = _networks(rule.dst.network, networks)
    names = {n.name for n in nets}
    bound = [p for p in ports if not p.routed and names.intersection(p.networks)]
    subnets: list[tuple[Family, str]] = [(6 if ":" in cidr else 4, cidr)
                                         for n in nets for cidr in n.subnets]
    return bound, subnets


def expand(rule: Rule, ports: Iterable[PublishedPort], set_families: set[tuple[str, Family]],
           networks: Iterable[DockerNetwork] = ()) -> Iterator[Match]:
    """One policy rule → the kernel matches that together select exactly its traffic."""
    if rule.dst.network is not None:
        bound, subnets = _network_targets(rule, ports, networks)
        yield from _binding_matches(rule, bound, set_families)
        for family, cidr in subnets:
            yield from _address_matches(rule, family, cidr, set_families)
    elif rule.dst.selector is not None:
        yield from _binding_matches(rule, ports, set_families)
    else:
        for family in FAMILIES:
            if rule.dst.net is None or rule.dst.net.version == family:
                dnet = str(rule.dst.net) if rule.dst.net is not None else None
                yield from _address_matches(rule, family, dnet, set_families)


def _address_matches(rule: Rule, family: Family, daddr: str | None,
                     set_families: set[tuple[str, Family]]) -> Iterator[Match]:
    has_ports = bool(rule.src.ports or rule.dst.ports)
    sports: list[PortRange | None] = list(rule.src.ports) or [None]
    dports: list[PortRange | None] = list(rule.dst.ports) or [None]
    for saddr, sset in _sources(rule.src, family, set_families):
        for l4 in _protos(rule, has_ports):
            for sport in sports:
                for port in dports:
                    yield Match(family=family, proto=l4, iface=rule.iface, saddr=saddr,
                                sset=sset, sport=sport, daddr=daddr, dport=port)


def _binding_matches(rule: Rule, ports: Iterable[PublishedPort],
                     set_families: set[tuple[str, Family]]) -> Iterator[Match]:
    sports: list[PortRange | None] = list(rule.src.ports) or [None]
    for family, proto, daddr, dport, port in _binding_targets(rule, ports):
        for saddr, sset in _sources(rule.src, family, set_families):
            for sport in sports:
                for dnat, not_dnat in _dnat_targets(rule, port, family):
                    yield Match(family=family, proto=proto, iface=rule.iface, saddr=saddr,
                                sset=sset, sport=sport, daddr=daddr, dport=dport,
                                dnat_daddr=dnat, not_dnat=not_dnat)
