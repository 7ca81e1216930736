"""Warnings for rules that can never decide anything: an earlier rule matches all their traffic.

Conservative: a warning is given only when the earlier rule's match provably contains the later
one's, comparing one earlier rule at a time (a rule covered only by several earlier rules together
is not reported). A false warning would teach users to ignore the check.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from fwsync.rules.model import Diagnostic, Network, Policy, PortRange, Rule, Span, audited

_BITS = {4: 32, 6: 128}
WHOLE: tuple[Network, ...] = (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))


@dataclass(frozen=True)
class Blocks:
    """A union of integer intervals (address or port ranges), merged: sorted, disjoint, apart."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @classmethod
    def of(cls, intervals: Iterable[tuple[int, int]]) -> Blocks:
        starts: list[int] = []
        ends: list[int] = []
        for low, high in sorted(intervals):
            if ends and low <= ends[-1] + 1:
                ends[-1] = max(ends[-1], high)
            else:
                starts.append(low)
                ends.append(high)
        return cls(tuple(starts), tuple(ends))

    def covers(self, other: Blocks) -> bool:
        # Merged blocks are maximal, so an interval inside the union lies inside one block.
        for low, high in zip(other.starts, other.ends, strict=True):
            i = bisect_right(self.starts, low) - 1
            if i < 0 or self.ends[i] < high:
                return False
        return True


def _nets(networks: Iterable[Network]) -> dict[int, Blocks]:
    return _spans((n.version, int(n.network_address), n.prefixlen) for n in networks)


def _spans(spans: Iterable[Span]) -> dict[int, Blocks]:
    by_family: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for version, low, plen in spans:  # span_bounds, inline: a set may hold 100k
        by_family[version].append((low, low | ((1 << (_BITS[version] - plen)) - 1)))
    return {f: Blocks.of(iv) for f, iv in by_family.items() if iv}


def _ports(ports: tuple[PortRange, ...]) -> Blocks | None:
    """None: any port."""
    return Blocks.of((p.low, p.high) for p in ports) if ports else None


@dataclass(frozen=True)
class Space:
    """The traffic one rule matches, as a product of independent dimensions."""

    iface: str | None
    protos: frozenset[str]  # "tcp", "udp", "other"
    src: dict[int, Blocks]  # by family; only families the rule can match at all
    sport: Blocks | None
    dst: dict[int, Blocks] | None  # None for a destination Docker names
    # ("container" | "service" | "network", NAME): named by Docker
    named: tuple[str, str] | None
    dst_any: bool
    dport: Blocks | None

    def covers(self, b: Space) -> bool:
        return (iface_covers(self.iface, b.iface)
                and b.protos <= self.protos
                and _ports_cover(self.sport, b.sport)
                and _ports_cover(self.dport, b.dport)
                and self._dst_covers(b)
                and _nets_cover(self.src, b.src))

    def _dst_covers(self, b: Space) -> bool:
        if b.named is not None:
            # Any destination takes in a container's (service's, network's) published ports; an
            # address may not (the container may be published on another one).
            return self.dst_any or (self.named is not None and self.named[0] == b.named[0]
                                    and container_covers(self.named[1], b.named[1]))
        return self.dst is not None and b.dst is not None and _nets_cover(self.dst, b.dst)


def iface_covers(a: str | None, b: str | None) -> bool:
    """`eth+` covers `eth0`, `eth+` and `eth1+`; a name without `+` only itself."""
    if a is None:
        return True
    if b is None:
        return False
    return b.removesuffix("+").startswith(a[:-1]) if a.endswith("+") else a == b


def container_covers(a: str, b: str) -> bool:
    """`web-*` covers `web-1` and the narrower pattern `web-x*`; a plain name only itself."""
    return b.startswith(a[:-1]) if a.endswith("*") else a == b


def _ports_cover(a: Blocks | None, b: Blocks | None) -> bool:
    return a is None or (b is not None and a.covers(b))


def _nets_cover(a: Mapping[int, Blocks], b: Mapping[int, Blocks]) -> bool:
    return all(f in a and a[f].covers(blocks) for f, blocks in b.items())


def space(rule: Rule, sets: Mapping[str, dict[int, Blocks]]) -> Space | None:
    """None when the rule matches nothing (an empty set) or names a set the policy lacks."""
    if rule.src.set is not None:
        if rule.src.set not in sets:
            return None
        src = sets[rule.src.set]
    else:
        src = _nets([rule.src.net] if rule.src.net is not None else WHOLE)
    dst = _nets([rule.dst.net] if rule.dst.net is not None else WHOLE)
    # A connection's two addresses are of one family: keep only the families both sides allow.
    families = src.keys() & dst.keys()
    if not families:
        return None
    has_ports = bool(rule.src.ports or rule.dst.ports or rule.dst.selector)
    protos = {"tcp", "udp"} | (set() if has_ports else {"other"})
    named = rule.dst.selector or (("network", rule.dst.network)
                                  if rule.dst.network is not None else None)
    return Space(
        iface=rule.iface,
        protos=frozenset(protos if rule.proto == "any" else {rule.proto}),
        src={f: src[f] for f in families},
        sport=_ports(rule.src.ports),
        dst=None if named is not None else {f: dst[f] for f in families},
        named=named,
        dst_any=rule.dst.is_any_address,
        dport=_ports(rule.dst.ports),
    )


def _log_lost(rule: Rule, earlier: Rule) -> str:
    """A shadowed rule's `log` that the earlier rule does not say is lost with it: deleting the
    rule as unreachable is right, but whoever wrote the `log` wanted these connections logged."""
    if not rule.log or earlier.log:
        return ""
    return (f"; its '{rule.log}' never applies: the earlier rule, without '{rule.log}', "
            f"decides these connections (add '{rule.log}' there to log them)")


def shadowed(policy: Policy) -> list[Diagnostic]:
    """A warning for each rule that an earlier rule shadows, naming the first such rule.

    Comparing every rule with every earlier one is quadratic: 10k rules of one address each
    (an allowlist written as rules) took ~100 s. A rule whose source is one network can only be
    covered by an earlier rule whose source is that network or a supernet of it (CIDR blocks
    nest or are disjoint), or whose source is not one network (any, a set): only those are
    compared."""
    sets = {name: _spans(s.spans) for name, s in policy.sets.items()}
    seen: list[tuple[Rule, Space]] = []
    by_net: dict[tuple[int, int, int], list[int]] = {}  # (version, address, prefix) → seen index
    general: list[int] = []  # rules whose source is not one network
    warnings: list[Diagnostic] = []
    for rule in policy.rules:
        this = space(rule, sets)
        if this is None:
            continue
        net = rule.src.net if rule.src.set is None else None
        candidates: Iterable[int] = range(len(seen))
        if net is not None:
            found = set(general)
            address = int(net.network_address)
            for prefix in range(net.prefixlen, -1, -1):
                mask = ((1 << prefix) - 1) << (net.max_prefixlen - prefix)
                found.update(by_net.get((net.version, address & mask, prefix), ()))
            candidates = sorted(found)
        earlier = next((seen[i][0] for i in candidates if seen[i][1].covers(this)), None)
        if earlier is not None:
            warnings.append(Diagnostic(
                file=rule.origin.file, line=rule.origin.line, col=1, severity="warning",
                message=f"rule is never reached: shadowed by {earlier.origin} "
                        f"('{earlier.origin.text}'){_log_lost(rule, earlier)}"))
        if audited(policy, rule):
            continue  # decides nothing (core/audit): what follows it is still reached
        if net is not None:
            key = (net.version, int(net.network_address), net.prefixlen)
            by_net.setdefault(key, []).append(len(seen))
        else:
            general.append(len(seen))
        seen.append((rule, this))
    return warnings
