"""Policy + observed Docker state → the desired, backend-neutral Ruleset. Pure."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from fwsync.core.audit import audited, default_audited, enforced_default
from fwsync.core.bindings import BindingRun, binding_runs, covered
from fwsync.core.bridges import host_bridges, judge_bridges
from fwsync.core.kernel_text import shown
from fwsync.core.logging_rules import (
    limit_refusals_logged,
    log_tag,
    logged_default,
    logged_rule,
)
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
from fwsync.core.tallies import MAX_TALLIES, counted_ports, published
from fwsync.rules.addresses import (
    disjoint_entries,
    entry_of,
    fast_entry,
    kernel_entries,
    kernel_text,
)
from fwsync.rules.limits import MAX_INPUT_RULES, MAX_KERNEL_RULES, count
from fwsync.rules.model import (
    Action,
    AddressSet,
    Diagnostic,
    Endpoint,
    Network,
    Origin,
    Policy,
    PortRange,
    Rule,
)
from fwsync.rules.text import literal_problem

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


def names_docker(dst: Endpoint) -> bool:
    """The destination is something Docker names (a container, a service, a network): what it
    selects is known only from Docker."""
    return dst.selector is not None or dst.network is not None


# What Docker last reported (observe/memory.py) may be out of date: a container removed since,
# and its host port taken by another. Taken from it is only what narrows access.
_NOT_FROM_MEMORY = ("Docker could not be asked, and an `allow` is not taken from what it last "
                    "reported (the port may belong to another container now): the rule matches "
                    "nothing until Docker answers (it never widens access).")
_LIMIT_FROM_MEMORY = ("Docker could not be asked: this `limit` rejects every new connection to "
                      "what Docker last reported for it, not only those above its rate (the port "
                      "may belong to another container now), until Docker answers.")


def unresolvable(policy: Policy, docker: DockerState) -> tuple[Rule, ...]:
    """The rules that narrow access to something Docker names (`deny`, `reject`, `limit` to a
    container, service or network) while fwsync knows nothing of Docker: it cannot be asked and
    nothing is remembered (or the memory was made when it had never answered). Enforced now,
    they would match nothing, and what they deny would stay open."""
    blind = docker.error is not None or (docker.stale is not None and docker.seen_at is None)
    if not blind:
        return ()
    return tuple(r for r in policy.rules if r.action != "allow" and names_docker(r.dst))


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
    runs = binding_runs(docker.ports)
    # The user's own rules first, in order: over the limit on their own, the rules are refused
    # where they cross it. The rules that name Docker's bindings (container, service, network)
    # get what is left after them and the INPUT path, and degrade closed when it is not enough:
    # what Docker publishes never blocks a rule change.
    chosen: dict[int, list[Match]] = {}
    actions: dict[int, Action] = {}
    docker_named: list[int] = []
    total = 0
    problems: list[Diagnostic] = []
    from_memory = docker.stale is not None
    for index, rule in enumerate(policy.rules):
        if from_memory and names_docker(rule.dst):
            if rule.action == "allow":
                notes.append(f"{rule.origin}: {_NOT_FROM_MEMORY}")
                continue
            if rule.action == "limit":
                # A limit lets connections through below its rate: to the old port that another
                # container may hold now, that would widen. Its refusing half is what narrows.
                actions[index] = "reject"
                notes.append(f"{rule.origin}: {_LIMIT_FROM_MEMORY}")
        if (why := unresolved(rule.dst, docker)) is not None:
            # From memory, the container may have started since: said so, for a deny that
            # is void until Docker answers.
            when = " in what Docker last reported (it may run now)" if from_memory else ""
            notes.append(f"{rule.origin}: {why}{when}: the rule matches nothing (it never "
                         "widens access).")
        if rule.dst.network is not None and docker.error is None and not _networks(
                rule.dst.network, docker.networks):
            notes.append(f"{rule.origin}: no Docker network matches {rule.dst.network!r}: the "
                         "rule matches nothing (it never widens access).")
        if rule.dst.selector is not None or rule.dst.network is not None:
            docker_named.append(index)
            continue
        # Stop at the limit: expanding on (port lists times source ports) is what took
        # gigabytes.
        found = _take(expand(rule, (), set_families, docker.networks), MAX_KERNEL_RULES - total)
        if found is None:
            problems.append(_too_many(rule))
            break
        chosen[index] = found
        total += len(found)
    if sum(not r.first.routed for r in runs) > min(MAX_INPUT_RULES, MAX_KERNEL_RULES - total):
        inputs = tuple(_widened_inputs(runs))
        notes.append(_input_note(runs))
    else:
        inputs = input_ports(docker.ports, runs)
    total += len(inputs)
    for index in docker_named if not problems else ():
        rule = policy.rules[index]
        budget = max(MAX_KERNEL_RULES - total, 0)
        # A limit from memory rejects (above): expanded as what it is now, it is not narrowed
        # to the container's address either (narrowing a refusal widens access).
        acting = rule if index not in actions else replace(rule, action=actions[index])
        found = None if _over(rule, runs, set_families, budget) else _take(
            expand(acting, (), set_families, docker.networks, runs), budget)
        if found is None:
            action, found, note = _degraded(rule, runs, set_families, docker)
            if len(found) > budget:  # too big even over one span: the rule's own doing
                problems.append(_too_many(rule))
                break
            notes.append(note)
            if action is None:
                found = []
            else:
                actions[index] = action
        chosen[index] = found
        total += len(found)
    used_sets: set[tuple[str, Family]] = set()
    rules: list[KernelRule] = []
    for index in sorted(chosen) if not problems else ():
        rule = policy.rules[index]
        for match in chosen[index]:
            if match.sset is not None:
                used_sets.add((match.sset, match.family))
            action = actions.get(index, rule.action)
            rules.append(KernelRule(match=match, action=action, origin=rule.origin, index=index,
                                    comment=rule.comment,
                                    log=logged_rule(policy, rule, action),
                                    log_refused=action == "limit" and limit_refusals_logged(
                                        policy.logging, rule.log),
                                    audit=audited(policy, rule)))
    if docker.proxy_cgroup is None and any(_ipv6_through_proxy(p) for p in docker.ports):
        notes.append(proxy_window(docker.proxy_cgroup_note))
    subnets = _bridges(docker.extra_bridges, notes)
    trusted, refused = judge_bridges(docker.networks, docker.links)
    notes.extend(f"{r.note}." for r in refused)
    counted, needed = counted_ports(
        [*(r.match for r in rules), *(Match(family=f) for f in FAMILIES)],
        published(docker.ports))
    if needed and not counted:
        notes.append(f"{needed} per-port counters would be needed (the decisions times the "
                     f"published ports each decides for), more than fwsync's {MAX_TALLIES}: "
                     "status counts per rule only")
    ruleset = Ruleset(
        rules=tuple(rules),
        sets=tuple(s for s in sets if (s.name, s.family) in used_sets),
        default=enforced_default(policy),
        default_origin=policy.default_origin,
        audit_default=policy.default if default_audited(policy) else None,
        protect_direct_routing=policy.protect_direct_routing,
        protect_localhost_publish=policy.protect_localhost_publish,
        bridges=trusted,
        bridge_subnets=subnets,
        refused_bridges=refused,
        # Routing straight into a network Docker no longer reports could reach whatever took
        # its subnet since: from memory, direct routing stays dropped everywhere.
        direct_ok=() if from_memory else _direct_ok(policy, docker, {b.name for b in trusted},
                                                    notes),
        host_bridges=host_bridges(docker, refused),
        input_ports=inputs,
        published=counted,
        proxy_cgroup=docker.proxy_cgroup,
        log_default=logged_default(policy),
        log_tag=log_tag(policy),
    )
    return BuildResult(ruleset=ruleset, notes=tuple(notes), problems=tuple(problems))


def _take(matches: Iterable[Match], limit: int) -> list[Match] | None:
    """The distinct matches, or None as soon as there are more than `limit`."""
    found: dict[Match, None] = {}
    for match in matches:
        found[match] = None
        if len(found) > limit:
            return None
    return list(found)


def _over(rule: Rule, runs: Sequence[BindingRun], set_families: set[tuple[str, Family]],
          limit: int) -> bool:
    """A `to container`/`to service` rule certainly expands past `limit`: counted without
    making its matches (25k scattered bindings: 0.3 s instead of 0.8 s a build)."""
    if rule.dst.selector is None:
        return False
    sports = max(len(rule.src.ports), 1)
    per_family = {f: len(_sources(rule.src, f, set_families)) * sports for f in FAMILIES}
    n = 0
    for family, _proto, _daddr, _dport, _port in _binding_targets(rule, runs):
        n += per_family[family]
        if n > limit:
            return True
    return False


def _too_many(rule: Rule) -> Diagnostic:
    return Diagnostic(
        file=rule.origin.file, line=rule.origin.line, col=1, severity="error",
        message=f"with this rule the rules expand to more than {count(MAX_KERNEL_RULES)} "
                "kernel rules (one per family, protocol, port list item, source port and "
                "container binding): fwsync's limit; use fewer ports or a set")


def _owners(runs: Iterable[BindingRun]) -> str:
    names = sorted({r.first.owner for r in runs})
    shown_names = ", ".join(repr(n) for n in names[:3])
    return shown_names + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _degraded(rule: Rule, runs: Sequence[BindingRun], set_families: set[tuple[str, Family]],
              docker: DockerState) -> tuple[Action | None, list[Match], str]:
    """A rule that names Docker's bindings, when they are too many to write one by one (ports
    published one by one, not as a range): it must never open more than the policy. An allow
    is dropped (what follows it and the default decide, which never opens more); a deny or
    reject is widened to the whole span of the ports it names, per family and protocol, on
    every host address; a limit, which dropped could let a later allow through unlimited,
    becomes such a deny. Returns the action (None: dropped), the matches of the widened rule
    (for a dropped one, what it would have been: too many of them means the rule is too big on
    its own, which the user is told as before) and the note."""
    if rule.dst.network is not None:
        bound, subnets = _network_targets(rule, (p for r in runs for p in r.bindings),
                                          docker.networks)
        runs = binding_runs(bound)
    else:
        subnets = []
    named = [r for r in runs if rule.dst.network is not None or named_by(rule.dst, r.first)]
    spans: dict[tuple[Family, L4], PortRange] = {}
    for family, proto, _daddr, dport, _port in _binding_targets(rule, runs):
        have = spans.get((family, proto))
        spans[(family, proto)] = dport if have is None else PortRange(
            min(have.low, dport.low), max(have.high, dport.high))
    why = (f"{rule.origin}: Docker publishes more ports for {_owners(named)} than fwsync can "
           f"write one by one ({count(len(named))} runs of ports; fwsync's limit is "
           f"{count(MAX_KERNEL_RULES)} kernel rules)")
    action: Action = "deny" if rule.action == "limit" else rule.action
    sports: list[PortRange | None] = list(rule.src.ports) or [None]
    matches = [Match(family=family, proto=proto, iface=rule.iface, saddr=saddr, sset=sset,
                     sport=sport, dport=span)
               for (family, proto), span in sorted(spans.items())
               for saddr, sset in _sources(rule.src, family, set_families)
               for sport in sports]
    for family, cidr in subnets:
        matches.extend(_address_matches(rule, family, cidr, set_families))
    matches = list(dict.fromkeys(matches))
    if rule.action == "allow":
        return None, matches, (f"{why}: this allow is dropped, so what follows it and the "
                               "default decide for those ports; publish them as one range to "
                               "have it enforced.")
    spans_text = ", ".join(f"IPv{f} {p} {s.low}-{s.high}" for (f, p), s in sorted(spans.items()))
    what = ("this limit denies instead (dropped, it could let a later allow through "
            "unlimited)" if rule.action == "limit" else f"this {rule.action} is widened")
    return action, matches, (
        f"{why}: {what} to every port from the lowest to the highest they name "
        f"({spans_text or 'none'}), on every host address; publish them as one range to have "
        "it enforced as written.")


def _widened_inputs(runs: Sequence[BindingRun]) -> list[InputPort]:
    """The INPUT path when Docker's runs of ports are too many for one rule each: per family
    and protocol, one rule from the lowest host port to the highest, on every host address.
    It judges more (a host service on a port between them too), never less."""
    spans: dict[tuple[Family, L4], list[PublishedPort]] = {}
    for run in runs:
        if not run.first.routed:
            spans.setdefault((6 if run.family == 6 else 4, run.first.proto), []).extend(
                run.bindings)
    out: list[InputPort] = []
    for (family, proto), bound in sorted(spans.items()):
        low, high = min(p.host_port for p in bound), max(p.host_port for p in bound)
        match = Match(family=family, proto=proto, dport=PortRange(low, high))
        wider = len({p.host_port for p in bound}) < high - low + 1 or any(
            not p.all_addresses for p in bound)
        out.append(InputPort(match, min(bound), tuple(bound),
                             "(and every port between)" if wider else ""))
    return out


def _input_note(runs: Sequence[BindingRun]) -> str:
    return (f"Docker publishes {count(len(runs))} runs of ports (for {_owners(runs)}), more "
            f"than fwsync writes one by one on the INPUT path (docker-proxy's ports; limit "
            f"{count(MAX_INPUT_RULES)}): fwsync's rules judge every port from the lowest to the "
            "highest there, per family and protocol, so a host service on a port between them "
            "is judged by them too.")


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


# The INPUT path's catch-all is "a new connection to a socket in dockerd's cgroup" (Ruleset.
# proxy_cgroup): nftables' `socket cgroupv2`, measured on Docker 20.10, 26.1 and 28.5
# (tests/e2e/test_proxy_match.py). iptables has no such match: `-m cgroup` never sees the SYN on
# INPUT (no socket is attached to it yet), and `-m socket` matches the host's own listeners too.
# Without it (no usable cgroup, or the iptables backend), the INPUT path's lines name the
# bindings known at apply, and this is said.
def proxy_window(why: str) -> str:
    """The note for a host where ports published later are not judged on the INPUT path."""
    return ("IPv6 connections to ports published through docker-proxy are judged on the INPUT "
            "path only for the bindings listed now: a port Docker publishes after this apply is "
            "open over IPv6 to whatever the host's INPUT firewall admits (e.g. `ufw allow PORT`) "
            "until the next apply (the daemon: its reconcile at Docker's start event). "
            f"No catch-all for docker-proxy's sockets here: {why or 'unknown'} "
            "(docs/how-it-works.md, \"What fwsync does not govern\").")


def later_proxy_ports(ruleset: Ruleset, ports: Iterable[PublishedPort],
                      catches: bool) -> str | None:
    """proxy_window's note for a backend that renders `ruleset`: None where it judges a later
    port on the INPUT path (`catches`: it renders Ruleset.proxy_cgroup), or nothing goes there."""
    if ruleset.proxy_cgroup is None or catches:
        return None
    if not any(_ipv6_through_proxy(p) for p in ports):
        return None
    return proxy_window("this backend has no match for it (iptables' `-m cgroup` never sees a "
                        "new connection on INPUT); the nftables backend has")


def proxy_gap(ruleset: Ruleset, docker: DockerState, catches: bool) -> str | None:
    """The INPUT path's window here, as plan says it (the build's note where dockerd's cgroup
    was refused, later_proxy_ports' where the backend has no match): status says it first."""
    if ruleset.proxy_cgroup is None:
        return proxy_window(docker.proxy_cgroup_note) \
            if any(_ipv6_through_proxy(p) for p in docker.ports) else None
    return later_proxy_ports(ruleset, docker.ports, catches)


def _ipv6_through_proxy(port: PublishedPort) -> bool:
    """IPv6 to a container without IPv6: docker-proxy serves it (core/report's
    through_docker_proxy, which imports this module)."""
    return port.family == 6 and port.container_ipv6 is False and not port.routed


def input_ports(ports: Iterable[PublishedPort], runs: Sequence[BindingRun] | None = None
                ) -> tuple[InputPort, ...]:
    """Every binding with a host port, for the INPUT path (docker-proxy's listening ports),
    one rule per run of consecutive host ports (`runs`: binding_runs(ports), if known).
    A DNATed connection never gets there (Docker rewrote its destination before routing), so
    these rules only see what docker-proxy serves: fwsync does not need to know whether the
    container has IPv6 or Docker's ip6tables is on to judge it."""
    found: dict[Match, InputPort] = {}
    for run in binding_runs(ports) if runs is None else runs:
        p = run.first
        if p.routed:
            continue  # no host port: clients connect to the container (FORWARD path)
        family: Family = 6 if p.family == 6 else 4
        daddr = None if p.all_addresses else kernel_text(ipaddress.ip_network(p.host_ip))
        match = Match(family=family, proto=p.proto, daddr=daddr, dport=run.ports)
        found.setdefault(match, InputPort(match, p, run.bindings if len(run.bindings) > 1
                                          else ()))
    return tuple(found.values())


def _sources(src: Endpoint, family: Family, set_families: set[tuple[str, Family]]
             ) -> list[tuple[str | None, str | None]]:
    """(saddr, sset) alternatives for one family; empty when the source has nothing of it."""
    if src.net is not None:
        # A /0 is its two /1s, as in a set (disjoint_entries): what every backend takes.
        if src.net.version != family:
            return []
        text = str(src.net)
        if src.net.prefixlen and not text.startswith("::"):
            return [(text, None)]  # the usual case, 10k times at times: as it is
        return [(cidr, None) for cidr in kernel_entries(text)]
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
    found = tuple((kernel_text(ipaddress.ip_network(a)), False) for a in port.container_addrs
                  if (":" in a) == (family == 6))
    return (*found, (None, True)) if found else ((None, False),)


def _binding_targets(rule: Rule, runs: Iterable[BindingRun]
                     ) -> Iterator[tuple[Family, L4, str | None, PortRange, PublishedPort]]:
    """(family, proto, daddr, dport, binding) for each run of published bindings a `to
    container` or `to service` rule names (for `to network`, `runs` are already the bindings it
    names): the part of the run's host ports the rule's ports cover, and the run's first
    binding (one container's: its addresses are the run's)."""
    for run in runs:
        p = run.first
        if rule.dst.selector is not None and not named_by(rule.dst, p):
            continue
        if rule.proto != "any" and rule.proto != p.proto:
            continue
        family: Family = 6 if p.family == 6 else 4
        daddr = None if p.all_addresses else kernel_text(ipaddress.ip_network(p.host_ip))
        for dport in covered(run.ports, rule.dst.ports):
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
           networks: Iterable[DockerNetwork] = (),
           runs: Sequence[BindingRun] | None = None) -> Iterator[Match]:
    """One policy rule → the kernel matches that together select exactly its traffic.
    `runs`: binding_runs(ports), when the caller has them already."""
    if runs is None:
        runs = binding_runs(ports)
    if rule.dst.network is not None:
        bound, subnets = _network_targets(rule, (p for r in runs for p in r.bindings),
                                          networks)
        yield from _binding_matches(rule, binding_runs(bound), set_families)
        for family, cidr in subnets:
            yield from _address_matches(rule, family, cidr, set_families)
    elif rule.dst.selector is not None:
        yield from _binding_matches(rule, runs, set_families)
    else:
        for family in FAMILIES:
            if rule.dst.net is None or rule.dst.net.version == family:
                dnet = kernel_text(rule.dst.net) if rule.dst.net is not None else None
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


def _binding_matches(rule: Rule, runs: Iterable[BindingRun],
                     set_families: set[tuple[str, Family]]) -> Iterator[Match]:
    sports: list[PortRange | None] = list(rule.src.ports) or [None]
    for family, proto, daddr, dport, port in _binding_targets(rule, runs):
        for saddr, sset in _sources(rule.src, family, set_families):
            for sport in sports:
                for dnat, not_dnat in _dnat_targets(rule, port, family):
                    yield Match(family=family, proto=proto, iface=rule.iface, saddr=saddr,
                                sset=sset, sport=sport, daddr=daddr, dport=dport,
                                dnat_daddr=dnat, not_dnat=not_dnat)
