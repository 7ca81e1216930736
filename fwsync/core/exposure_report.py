"""The exposure report behind `fwsync status`: every published binding, who may reach it, and the
surprises a ufw or Docker user would not expect. Pure: Policy + DockerState in, data out."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from fwsync.core.build import build_ruleset, container_matches, named_by, unresolved
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.port_decisions import Decision, decisions_for, rules_for
from fwsync.core.ruleset import Ruleset
from fwsync.rules.model import Network, Policy, PortRange, Rule

SurpriseKind = Literal[
    "wide-binding",            # published on every address, allowed only to/from one place
    "ipv6-docker-proxy",       # IPv6 reaches it through docker-proxy (INPUT): ufw decides too
    "localhost-publish-off",   # a 127.0.0.1 binding other hosts can reach (protection switched off)
    "container-port-rule",     # a rule names the container's own port, not the published one
    "other-protocol-rule",     # a rule allows the port, but for the other protocol
    "nobody-allowed",          # published, but no rule lets anyone in
    "missing-container",       # a `to container` rule whose container is not running
    "missing-service",         # a `to service` rule that names no port on this node
    "container-port-unpublished",  # its container runs but publishes no port the rule names
]


@dataclass(frozen=True)
class Surprise:
    kind: SurpriseKind
    message: str
    origin: str | None = None  # file:line of the rule involved, if one is


@dataclass(frozen=True)
class PortReport:
    port: PublishedPort
    decisions: tuple[Decision, ...]
    # False when connections to this binding would bypass fwsync's rules.
    governed: bool
    surprises: tuple[Surprise, ...]


@dataclass(frozen=True)
class ExposureReport:
    ports: tuple[PortReport, ...]
    surprises: tuple[Surprise, ...]  # about rules rather than one binding


def binding_text(port: PublishedPort) -> str:
    host = f"[{port.host_ip}]" if port.family == 6 else port.host_ip
    return f"{host}:{port.host_port}/{port.proto}"


def through_docker_proxy(port: PublishedPort) -> bool:
    """IPv6 to a container without an IPv6 address: Docker can't DNAT it, so its userland proxy
    accepts the connection on the host (INPUT) and opens a new one to the container's IPv4
    address. fwsync judges it there with the same rules (its INPUT-path chain); the host's own
    INPUT firewall (ufw) still decides after fwsync's allow."""
    return port.family == 6 and port.container_ipv6 is False


def governed(ruleset: Ruleset, ports: tuple[PublishedPort, ...]) -> frozenset[PublishedPort]:
    """The bindings no connection can reach past fwsync's rules: every DNATed one (FORWARD
    path), and one served by docker-proxy only if the ruleset judges its port on the INPUT
    path too."""
    on_input = {b for p in ruleset.input_ports for b in p.bindings}
    return frozenset(p for p in ports if not through_docker_proxy(p) or p in on_input)


def _loopback(port: PublishedPort) -> bool:
    return not port.all_addresses and ipaddress.ip_address(port.host_ip).is_loopback


def _allowing(policy: Policy, ruleset: Ruleset, port: PublishedPort
              ) -> tuple[list[Rule], bool]:
    """The allow/limit rules that can let someone in, and whether the default lets in the rest."""
    found = rules_for(policy, ruleset, port)
    allowing = [rule for rule, _ in found if rule.action in ("allow", "limit")]
    caught_all = bool(found) and found[-1][1]
    return allowing, ruleset.default == "allow" and not caught_all


def _source_networks(policy: Policy, rule: Rule, family: int) -> list[Network] | None:
    """The source networks of one family a rule admits; None when it admits any source."""
    if rule.src.net is not None:
        return [rule.src.net] if rule.src.net.version == family else []
    if rule.src.set is not None and rule.src.set in policy.sets:
        return [n for n in policy.sets[rule.src.set].networks if n.version == family]
    return None


def _origins(rules: list[Rule]) -> str:
    return ", ".join(dict.fromkeys(str(r.origin) for r in rules))


def _wide_binding(policy: Policy, port: PublishedPort, allowing: list[Rule]) -> Surprise | None:
    if not port.all_addresses or not allowing:
        return None
    targets = {r.dst.net for r in allowing}
    if None not in targets and len(targets) == 1:
        (target,) = targets
        assert target is not None
        if target.num_addresses == 1:
            addr = str(target.network_address)
            host = f"[{addr}]" if target.version == 6 else addr
            where = f"on that address (-p {host}:{port.host_port}:{port.container_port})"
        else:
            where = f"on this host's address in {target}"
        return Surprise("wide-binding",
                        f"published on all addresses, but the rules allow it only to {target}: "
                        f"publish it {where} so that it stays closed without the firewall",
                        _origins(allowing))
    if None not in targets:
        return None
    sources: list[Network] = []
    for rule in allowing:
        nets = _source_networks(policy, rule, port.family)
        if nets is None or rule.dst.net is not None:
            return None  # someone may connect from anywhere, or only to a chosen address
        sources.extend(nets)
    merged = list(ipaddress.collapse_addresses(sources))  # type: ignore[type-var]
    if len(merged) != 1:
        return None
    return Surprise("wide-binding",
                    f"published on all addresses, but only {merged[0]} may connect: publishing "
                    "it on this host's address in that network keeps it closed to everyone "
                    "else even without the firewall", _origins(allowing))


def _rule_covers_port(rule: Rule, number: int, proto: str) -> bool:
    port = PortRange(low=number, high=number)
    return rule.proto in ("any", proto) and any(r.covers(port) for r in rule.dst.ports)


def _container_port_rule(policy: Policy, port: PublishedPort) -> Surprise | None:
    if port.host_port == port.container_port:
        return None
    for rule in policy.rules:
        if rule.action not in ("allow", "limit") or not rule.dst.ports:
            continue
        if rule.dst.selector is not None and not named_by(rule.dst, port):
            continue
        if _rule_covers_port(rule, port.container_port, port.proto):
            own = "the service's target port" if port.service and not port.container \
                else "the container's own port"
            return Surprise(
                "container-port-rule",
                f"no rule lets anyone in, but {rule.origin} allows port {port.container_port}, "
                f"{own}: rules match the published host port "
                f"({port.host_port}/{port.proto})", str(rule.origin))
    return None


def _other_protocol_rule(policy: Policy, port: PublishedPort) -> Surprise | None:
    other = "udp" if port.proto == "tcp" else "tcp"
    for rule in policy.rules:
        if rule.action in ("allow", "limit") and rule.proto == other and rule.dst.ports and \
                _rule_covers_port(rule, port.host_port, other):
            return Surprise(
                "other-protocol-rule",
                f"no rule lets anyone in, but {rule.origin} allows {port.host_port}/{other}: "
                f"this port is published as {port.proto} (`proto any` or a second rule covers "
                "both)", str(rule.origin))
    return None


def _port_surprises(policy: Policy, ruleset: Ruleset, port: PublishedPort
                    ) -> Iterator[Surprise]:
    if _loopback(port):
        if not policy.protect_localhost_publish:
            yield Surprise("localhost-publish-off",
                           "published on a loopback address, but `protect localhost-publish` is "
                           "off: a neighbour that routes 127.0.0.1 / ::1 to this host reaches it")
        return
    allowing, default_allows = _allowing(policy, ruleset, port)
    if through_docker_proxy(port) and (allowing or default_allows):
        # Whom fwsync lets in there still has to pass the host's INPUT rules.
        yield Surprise(
            "ipv6-docker-proxy",
            "IPv6 connections reach it through docker-proxy on the host's INPUT path (the "
            "container has no IPv6 address): fwsync's rules decide there too, but what they "
            "allow must also pass the host's own INPUT firewall (with ufw's `default deny "
            f"incoming`, `ufw allow {port.host_port}/{port.proto}` as well)")
    if not allowing and not default_allows:
        nobody = Surprise(
            "nobody-allowed",
            f"no rule allows {port.host_port}/{port.proto} and the default is "
            f"{policy.default}: no other host can connect (only this host and containers can)")
        # A near miss in the rules explains it better than "nobody" does.
        yield _container_port_rule(policy, port) or _other_protocol_rule(policy, port) or nobody
        return
    if not default_allows:
        wide = _wide_binding(policy, port, allowing)
        if wide is not None:
            yield wide


def _rule_surprises(policy: Policy, docker: DockerState) -> Iterator[Surprise]:
    if docker.error is not None:
        return  # which containers run is unknown: saying "missing" would be a guess
    running = set(docker.containers) | {p.container for p in docker.ports if p.container}
    for rule in policy.rules:
        if rule.dst.service is not None:
            why = unresolved(rule.dst, docker)
            if why is not None:
                yield Surprise("missing-service", f"{why}: the rule matches nothing here until "
                               "one does (and then only after the next apply)", str(rule.origin))
            continue
        pattern = rule.dst.container
        if pattern is None:
            continue
        names = sorted(n for n in running if container_matches(pattern, n))
        if not names:
            yield Surprise("missing-container",
                           f"no running container matches {pattern!r}: the rule matches nothing "
                           "until one does (and then only after the next apply)",
                           str(rule.origin))
            continue
        bound = [p for p in docker.ports if p.container in names
                 and rule.proto in ("any", p.proto)
                 and (not rule.dst.ports or _rule_covers_port(rule, p.host_port, p.proto))]
        if not bound:
            published = sorted({f"{p.host_port}/{p.proto}" for p in docker.ports
                                if p.container in names})
            what = ", ".join(published) if published else "nothing"
            yield Surprise("container-port-unpublished",
                           f"{', '.join(names)} runs, but publishes no port this rule names "
                           f"(it publishes {what}): the rule matches nothing", str(rule.origin))


def exposure_report(policy: Policy, docker: DockerState, ruleset: Ruleset | None = None
                    ) -> ExposureReport:
    """`ruleset`: build_ruleset(policy, docker)'s, when the caller has it (status: the plan's),
    else built here."""
    # The ruleset apply writes and explain walks: every binding is judged by the same matcher.
    if ruleset is None:
        ruleset = build_ruleset(policy, docker).ruleset
    judged = governed(ruleset, docker.ports)
    ports = tuple(
        PortReport(port=p, decisions=tuple(decisions_for(policy, ruleset, p)),
                   governed=p in judged,
                   surprises=tuple(_port_surprises(policy, ruleset, p)))
        # The IPv4 and IPv6 bindings of one port side by side.
        for p in sorted(docker.ports, key=lambda p: (p.host_port, p.proto, p.family, p.host_ip))
    )
    return ExposureReport(ports=ports, surprises=tuple(_rule_surprises(policy, docker)))
