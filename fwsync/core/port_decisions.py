"""One published binding's decisions: who may reach it, and which rule says so. Pure: a view
of the matcher (the exposure report, core/exposure_report.py, lists them for every binding).

The rules listed for a binding are the ones fwsync.core.matching finds in the built Ruleset for
a connection from anyone to that binding (its family, protocol, port and host address): the
same walk explain makes for one client, so status and explain cannot disagree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from fwsync.core.audit import AUDIT_VERDICT
from fwsync.core.matching import Question, audits, candidates, localhost_protected
from fwsync.core.observed import PublishedPort
from fwsync.core.ruleset import KernelRule, Ruleset
from fwsync.rules.model import Endpoint, Policy, Rule


@dataclass(frozen=True)
class Decision:
    action: str  # allow | deny | reject | limit, or `audit ACTION` (decides nothing)
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


def question(port: PublishedPort) -> Question:
    """A new connection from anyone to this binding."""
    daddr = None if port.all_addresses else ipaddress.ip_address(port.host_ip)
    return Question(6 if port.family == 6 else 4, port.proto, port.host_port, daddr)


def rules_for(policy: Policy, ruleset: Ruleset, port: PublishedPort) -> list[tuple[Rule, bool]]:
    """The policy rules that can match connections to this binding, in kernel order, up to the
    first that matches all of them: (rule, matches every connection to the binding).
    `ruleset` is build_ruleset(policy, docker) for a Docker state that includes the binding."""
    found: dict[int, bool] = {}
    for kernel_rule, needs in candidates(ruleset, question(port)):
        # One policy rule is several kernel rules (protocols, ports, sources): listed once.
        found[kernel_rule.index] = found.get(kernel_rule.index, False) or not needs
    return [(policy.rules[index], whole) for index, whole in found.items()]


def decisions_for(policy: Policy, ruleset: Ruleset, port: PublishedPort) -> list[Decision]:
    """The rules that decide for this binding, in order, ending with the one that catches all."""
    if localhost_protected(ruleset, question(port)):
        return [Decision("deny", "other hosts", "protect localhost-publish")]
    decisions: list[Decision] = []
    q = question(port)
    deciding = _whole(candidates(ruleset, q))
    audited = _whole(audits(ruleset, q))  # decide nothing (core/audit): shown as such
    for index in sorted(deciding.keys() | audited.keys()):
        rule = policy.rules[index]
        who = _describe_source(rule)
        if rule.dst.net is not None and port.all_addresses:
            who += f" (to {rule.dst.net})"
        if index in audited:
            decisions.append(Decision(f"{AUDIT_VERDICT} {rule.action}", who, str(rule.origin)))
            continue
        decisions.append(Decision(rule.action, who, str(rule.origin)))
        if deciding[index]:
            return decisions
    origin = str(policy.default_origin) if policy.default_origin else "built-in default"
    who = "anyone else" if any(not d.action.startswith(AUDIT_VERDICT) for d in decisions) \
        else "anyone"
    if ruleset.audit_default is not None:
        decisions.append(Decision(f"{AUDIT_VERDICT} {ruleset.audit_default}", who, origin))
    decisions.append(Decision(ruleset.default, who, origin))
    return decisions


def _whole(found: Iterable[tuple[KernelRule, tuple[str, ...]]]) -> dict[int, bool]:
    """Policy rule index → whether it matches every connection to the binding."""
    out: dict[int, bool] = {}
    for kernel_rule, needs in found:
        out[kernel_rule.index] = out.get(kernel_rule.index, False) or not needs
    return out
