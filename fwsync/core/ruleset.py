"""The desired ruleset, backend-neutral: what to match and what to do, already split per family.

Every match is on the connection's *original* direction as conntrack saw it before Docker's DNAT:
`daddr`/`dport` are the host address and published host port the client connected to, never a
container address (those change on restart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fwsync.rules.model import Action, DefaultAction, Origin, PortRange

Family = Literal[4, 6]
L4 = Literal["tcp", "udp"]


@dataclass(frozen=True)
class AddrSet:
    """A named address set as the kernel holds it: one family, merged non-overlapping CIDRs."""

    name: str  # the user's `define` name
    family: Family
    elements: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    family: Family
    proto: L4 | None = None  # None: any protocol (only when no port is matched)
    iface: str | None = None
    saddr: str | None = None  # CIDR
    sset: str | None = None  # name of an AddrSet of the same family
    sport: PortRange | None = None
    daddr: str | None = None  # CIDR of the original destination (a host address)
    dport: PortRange | None = None  # original destination port (the published host port)


@dataclass(frozen=True)
class KernelRule:
    match: Match
    action: Action
    origin: Origin
    index: int  # position of the source rule in the policy; stable id for per-rule state (limit)
    comment: str | None = None


@dataclass(frozen=True)
class RateLimit:
    """What `limit` means, on every backend: per source address, a bucket of `burst` new
    connections, refilled at `per_minute` a minute. A new connection that finds the bucket empty
    is refused (rejected) and takes nothing from it; a source unseen for `forget_after` seconds
    is forgotten (its bucket is full again by then). The iptables backend renders it as
    `hashlimit`, the nftables one as a per-source `limit` in a dynamic set: both are this token
    bucket, so one burst meets the same verdicts on either."""

    burst: int
    per_minute: int
    forget_after: int  # seconds

    def verdicts(self, times: Sequence[float]) -> list[bool]:
        """The model: for new connections from one source at these times (seconds, ascending),
        which are let through."""
        out: list[bool] = []
        tokens, last = float(self.burst), None
        for t in times:
            if last is not None:
                idle = t - last
                tokens = float(self.burst) if idle > self.forget_after else \
                    min(float(self.burst), tokens + idle * self.per_minute / 60)
            last = t
            out.append(tokens >= 1)
            if tokens >= 1:
                tokens -= 1
        return out


# ufw's `limit` refuses the 6th new connection within 30 s; a token bucket (which nftables can
# express, and iptables' hashlimit too) lets 5 through at once, then one every 6 s.
LIMIT = RateLimit(burst=5, per_minute=10, forget_after=30)


@dataclass(frozen=True)
class Ruleset:
    rules: tuple[KernelRule, ...]
    sets: tuple[AddrSet, ...]
    default: DefaultAction
    default_origin: Origin | None
    protect_direct_routing: bool
    protect_localhost_publish: bool
    bridges: tuple[str, ...]  # interface names (iptables `+` wildcards allowed) of Docker networks
    # Networks whose bridge has a name the kernel cannot be given literally (core/kernel_text):
    # new connections to their subnets (CIDRs, both families) are judged instead.
    bridge_subnets: tuple[str, ...] = ()
    # (Every DNATed new connection that comes from no Docker bridge is judged anyway, whatever it
    # leaves by: the renderers' forward chain. That covers a bridge known by neither.)
    limit: RateLimit = LIMIT  # what every `limit` rule means

    def bridge_subnets_for(self, family: Family) -> tuple[str, ...]:
        return tuple(n for n in self.bridge_subnets if (":" in n) == (family == 6))

    def for_family(self, family: Family) -> tuple[KernelRule, ...]:
        return tuple(r for r in self.rules if r.match.family == family)

    def sets_for(self, family: Family) -> tuple[AddrSet, ...]:
        return tuple(s for s in self.sets if s.family == family)
