"""Who may reach a published port, and which rule says so. Pure: policy + one binding."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fwsync.core.build import container_matches
from fwsync.core.observed import PublishedPort
from fwsync.rules.model import Endpoint, Policy, PortRange, Rule


@dataclass(frozen=True)
class Decision:
    action: str  # allow | deny | reject | limit
    who: str  # the sources this decision is for, in the user's words
    origin: str  # file:line, or the built-in default / protection that decides


def _describe_source(rule: Rule) -> str:
    src: Endpoint = rule.src
    who = "anyone" if src.is_any_address else (f"${src.set}" if src.set else str(src.net))
    if src.ports:
        who += " port " + ",".join(str(p) for p in src.ports)
    if rule.iface:
        who += f" on {rule.iface}"
    return who


def _applies(rule: Rule, port: PublishedPort) -> tuple[bool, bool]:
    """(can match connections to this binding, matches all of them regardless of source)."""
    if rule.proto not in ("any", port.proto):
        return False, False
    dport = PortRange(low=port.host_port, high=port.host_port)
    if rule.dst.ports and not any(r.covers(dport) for r in rule.dst.ports):
        return False, False
    whole = True
    if rule.dst.container is not None:
        if not container_matches(rule.dst.container, port.container):
            return False, False
    elif rule.dst.net is not None:
        if rule.dst.net.version != port.family:
            return False, False
        if port.all_addresses:
            whole = False  # only connections to that one host address
        elif ipaddress.ip_address(port.host_ip) not in rule.dst.net:
            return False, False
    unconditional = whole and rule.src.is_any_address and not rule.src.ports and not rule.iface
    return True, unconditional


def rules_for(policy: Policy, port: PublishedPort) -> list[tuple[Rule, bool]]:
    """The rules that can match connections to this binding, in order, up to the first that
    matches all of them: (rule, matches every connection to the binding)."""
    found: list[tuple[Rule, bool]] = []
    for rule in policy.rules:
        applies, unconditional = _applies(rule, port)
        if applies:
            found.append((rule, unconditional))
            if unconditional:
                break
    return found


def decisions_for(policy: Policy, port: PublishedPort) -> list[Decision]:
    """The rules that decide for this binding, in order, ending with the one that catches all."""
    if policy.protect_localhost_publish and not port.all_addresses and \
            ipaddress.ip_address(port.host_ip).is_loopback:
        return [Decision("deny", "other hosts", "protect localhost-publish")]
    decisions: list[Decision] = []
    for rule, unconditional in rules_for(policy, port):
        who = _describe_source(rule)
        if rule.dst.net is not None and port.all_addresses:
            who += f" (to {rule.dst.net})"
        decisions.append(Decision(rule.action, who, str(rule.origin)))
        if unconditional:
            return decisions
    origin = str(policy.default_origin) if policy.default_origin else "built-in default"
    decisions.append(Decision(policy.default, "anyone else" if decisions else "anyone", origin))
    return decisions
