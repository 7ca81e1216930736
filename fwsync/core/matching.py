"""Which rules can match a connection to a binding, in kernel order. Pure.

The one matcher behind `status`, `doctor`'s port checks and `explain`: it walks the very Ruleset
that `build_ruleset` makes and the backends render, match by match, reading each Match field as
both renderers do (`saddr`/`sset` the source, `daddr`/`dport` the original destination — the
host address and published port —, `proto`, `sport`, `iface`). A rule of one address family
never matches a connection of the other: that is decided here, once.

What the question leaves open (the source, when status asks about everyone; the arriving
interface; the client's source port; the host address of an all-address binding) can't decide:
a rule that hinges on it comes back with what it needs, and the walk goes on to the first rule
that matches whatever the open parts are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from fwsync.core.ruleset import L4, Family, KernelRule, Match, Ruleset

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOCALHOST = {4: ipaddress.ip_network("127.0.0.0/8"), 6: ipaddress.ip_network("::1/128")}


@dataclass(frozen=True)
class Question:
    """A new connection through a published port, as far as it is known."""

    family: Family
    proto: L4
    port: int  # the published host port
    daddr: IPAddress | None = None  # the host address connected to; None: not known
    source: IPAddress | None = None  # the client; None: anyone (status' question)


def _in(addr: IPAddress, cidr: str) -> bool:
    return addr in ipaddress.ip_network(cidr)


def _in_set(ruleset: Ruleset, name: str, family: int, addr: IPAddress) -> bool:
    return any(s.holds(addr) for s in ruleset.sets if s.name == name and s.family == family)


def conditions(m: Match, ruleset: Ruleset, q: Question) -> tuple[str, ...] | None:
    """None when the match can't select this connection; else what else it needs (empty: it
    selects it whatever the question left open)."""
    if m.family != q.family:
        return None
    if m.proto is not None and m.proto != q.proto:
        return None
    if m.dport is not None and not m.dport.low <= q.port <= m.dport.high:
        return None
    needs: list[str] = []
    if m.saddr is not None:
        if q.source is None:
            needs.append(f"from {m.saddr}")
        elif not _in(q.source, m.saddr):
            return None
    if m.sset is not None:
        if q.source is None:
            needs.append(f"from ${m.sset}")
        elif not _in_set(ruleset, m.sset, m.family, q.source):
            return None
    if m.daddr is not None:
        if q.daddr is None:
            needs.append(f"connecting to {m.daddr}")
        elif not _in(q.daddr, m.daddr):
            return None
    if m.sport is not None:
        needs.append(f"from source port {m.sport}")
    if m.iface is not None:
        needs.append(f"arriving on {m.iface}")
    return tuple(needs)


def localhost_protected(ruleset: Ruleset, q: Question) -> bool:
    """`protect localhost-publish` drops it before any rule is looked at."""
    return ruleset.protect_localhost_publish and q.daddr is not None and \
        q.daddr in LOCALHOST[q.family]


def candidates(ruleset: Ruleset, q: Question) -> Iterator[tuple[KernelRule, tuple[str, ...]]]:
    """The kernel rules that can match the connection, in kernel order, each with what else it
    needs; the walk ends with the first that needs nothing (after it, only the default could
    have decided, and it does not). The protections are the caller's first question."""
    for rule in ruleset.rules:
        if rule.audit:
            continue  # decides nothing (core/audit): audits() names it
        needs = conditions(rule.match, ruleset, q)
        if needs is None:
            continue
        yield rule, needs
        if not needs:
            return


def audits(ruleset: Ruleset, q: Question) -> Iterator[tuple[KernelRule, tuple[str, ...]]]:
    """The audited rules (core/audit) the connection passes before what decides it, in kernel
    order, each with what else it needs: what they would refuse is counted and logged."""
    for rule in ruleset.rules:
        needs = conditions(rule.match, ruleset, q)
        if needs is None:
            continue
        if rule.audit:
            yield rule, needs
        elif not needs:
            return
