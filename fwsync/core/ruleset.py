"""The desired ruleset, backend-neutral: what to match and what to do, already split per family.

Every match is on the connection's *original* direction as conntrack saw it before Docker's DNAT:
`daddr`/`dport` are the address and port the client connected to — the host address and the
published host port, or on a network in `routed` gateway mode (no DNAT), a container's address
and port.

Two paths lead to the same rules: FORWARD (connections into a Docker bridge: DNATed through a
published port, or routed straight to a container's address), and INPUT (connections to a port
docker-proxy listens on: IPv6 to a container without IPv6, every IPv6 publish where Docker's
ip6tables is off). On the FORWARD path the direct-routing protection drops what was not DNATed,
except to the subnets `direct_ok` names.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from fwsync.core.bridges import RefusedBridge, TrustedBridge
from fwsync.core.observed import ProxyCgroup, PublishedPort
from fwsync.rules.model import Action, DefaultAction, Origin, PortRange

Family = Literal[4, 6]
L4 = Literal["tcp", "udp"]


@dataclass(frozen=True)
class AddrSet:
    """A named address set as the kernel holds it: one family, merged non-overlapping CIDRs."""

    name: str  # the user's `define` name
    family: Family
    elements: tuple[str, ...]

    def holds(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether an element holds the address: one lookup in an index built on first use
        (the matcher asks this for hundreds of sources when status checks the kernel's
        verdicts, and a set may have 100k elements)."""
        if addr.version != self.family:
            return False
        hosts, starts, ends = self._index
        value = int(addr)
        if value in hosts:
            return True
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]

    @cached_property
    def _index(self) -> tuple[frozenset[int], list[int], list[int]]:
        """Single addresses (most of a big set) in a hash set, networks as sorted merged
        spans: sorting 100k one-address spans was most of the index's cost (0.165 s of a
        0.55 s no-op `plan` at 100k)."""
        af, bits = (socket.AF_INET, 32) if self.family == 4 else (socket.AF_INET6, 128)
        hosts: set[int] = set()
        spans: list[tuple[int, int]] = []
        for e in self.elements:  # canonical CIDR text: split, not parsed (~1 µs each)
            text, _, plen = e.partition("/")
            value = int.from_bytes(socket.inet_pton(af, text), "big")
            host = bits - (int(plen) if plen else bits)
            if host == 0:
                hosts.add(value)
                continue
            first = value >> host << host
            spans.append((first, first + (1 << host) - 1))
        spans.sort()
        starts: list[int] = []
        ends: list[int] = []
        for first, last in spans:
            if ends and first <= ends[-1] + 1:
                ends[-1] = max(ends[-1], last)
            else:
                starts.append(first)
                ends.append(last)
        return frozenset(hosts), starts, ends


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
    # An allow (or limit) to a container: its own address, the destination *after* Docker's
    # DNAT (CIDR). A port that another container holds now is not this rule's: it fails closed
    # until the next apply. (Never on a deny: narrowing a deny would widen access.)
    dnat_daddr: str | None = None
    # The same rule's other half: a connection Docker did not DNAT (docker-proxy's, on the
    # host's INPUT path: IPv6 while Docker's ip6tables is off), which has no container address.
    not_dnat: bool = False


@dataclass(frozen=True)
class KernelRule:
    match: Match
    action: Action
    origin: Origin
    index: int  # position of the source rule in the policy; stable id for per-rule state (limit)
    comment: str | None = None
    log: bool = False  # its new connections are logged (core/logging.logged); a limit's admitted
    # A limit's refusals over its rate are logged (core/logging_rules.limit_refusals_logged)
    log_refused: bool = False
    # Decides nothing: counted and logged as what it would do, then the next rule (core/audit)
    audit: bool = False


LimitOutcome = Literal["ok", "over", "full"]


@dataclass(frozen=True)
class RateLimit:
    """What `limit` means, on every backend: per source, a bucket of `burst` new connections,
    refilled at `per_minute` a minute. A new connection that finds the bucket empty is refused
    (rejected) and takes nothing from it; a source unseen for `forget_after` seconds is
    forgotten (its bucket is full again by then). A source is an IPv4 address, or an IPv6 /64
    (`ipv6_prefix`): one IPv6 host owns 2^64 addresses, and per address it would have a fresh
    bucket for each connection.

    Each `limit` rule keeps the buckets of at most `capacity` sources at once, per family. While
    its table is full, a new source's connection is dropped (silently: no bucket, no rate), and
    a source already in it keeps its own bucket: the limit fails closed. That is what iptables'
    hashlimit does (xt_hashlimit.c: `dsthash_alloc_init` finds `count >= max`, and the packet is
    hot-dropped); the nftables meter's update finds its set full and matches nothing, so a rule
    after it drops what the meter holds no bucket for.

    The iptables backend renders it as `hashlimit`, the nftables one as a per-source `limit` in
    a dynamic set: both are this token bucket, so one burst meets the same verdicts on either."""

    burst: int
    per_minute: int
    forget_after: int  # seconds
    capacity: int = 65535  # sources per rule and family (the kernel's tables are sized to it)
    ipv6_prefix: int = 64  # an IPv6 source's bucket covers its network of this length

    def bucket(self, source: str) -> str:
        """The bucket a source address counts against: the address (IPv4), its /64 (IPv6)."""
        if ":" not in source:
            return source
        net = ipaddress.ip_network(f"{source}/{self.ipv6_prefix}", strict=False)
        return str(net)

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

    def outcomes(self, events: Sequence[tuple[float, str]]) -> list[LimitOutcome]:
        """The model for many sources of one family: for new connections (time, source
        address; times ascending), each one's outcome: "ok" (let through), "over" (its bucket
        is empty: rejected) or "full" (no bucket, the table holds `capacity` sources: dropped).
        A bucket's source is forgotten once unseen for `forget_after` seconds."""
        seen: dict[str, list[float]] = {}
        out: list[LimitOutcome] = []
        for t, source in events:
            key = self.bucket(source)
            for other in [k for k, ts in seen.items() if t - ts[-1] > self.forget_after]:
                del seen[other]
            if key not in seen and len(seen) >= self.capacity:
                out.append("full")
                continue
            times = [*seen.get(key, []), t]
            seen[key] = times
            out.append("ok" if self.verdicts(times)[-1] else "over")
        return out


# ufw's `limit` refuses the 6th new connection within 30 s; a token bucket (which nftables can
# express, and iptables' hashlimit too) lets 5 through at once, then one every 6 s.
LIMIT = RateLimit(burst=5, per_minute=10, forget_after=30)


@dataclass(frozen=True)
class DirectOk:
    """Connections routed straight to container addresses (no DNAT) that go to the rules
    instead of being dropped by the direct-routing protection: to one subnet of a Docker
    network, out of that network's bridge, which passed the host check (core/bridges.py). Both
    together say which network it is now: a later network that reuses the subnet has another
    bridge, and when the network is gone Docker no longer reports it (until the next apply,
    the rule matches its bridge, which is gone too)."""

    family: Family
    subnet: str  # CIDR
    network: str  # the Docker network's name, "" when it is not plain text (comments only)
    why: str  # "routed network", or "protect direct-routing off to network"
    origin: Origin | None = None
    bridge: str = ""  # the network's bridge (a trusted one: its name is written literally)

    @property
    def label(self) -> str:
        """For the kernel comment: where it comes from, in a few words."""
        where = f"{self.origin.short} " if self.origin else ""
        return f"{where}{self.why} {self.network}".rstrip()


@dataclass(frozen=True)
class InputPort:
    """A published binding judged on the INPUT path too: docker-proxy listens there, and a
    connection Docker does not DNAT (IPv6 to an IPv4-only container; ip6tables off) reaches it
    as the host's own. The same rules decide as on the FORWARD path."""

    match: Match  # family, proto, daddr (None: every host address), dport
    port: PublishedPort  # the first binding it judges
    # Every binding it judges: a run of consecutive host ports is one rule (core/bindings.py).
    # Empty: `port` alone.
    ports: tuple[PublishedPort, ...] = field(default=(), compare=False, repr=False)
    # Said after the binding in the kernel comment: why it covers more than the bindings.
    widened: str = ""

    @property
    def bindings(self) -> tuple[PublishedPort, ...]:
        return self.ports or (self.port,)

    @property
    def binding(self) -> str:
        """e.g. "[::]:8080/tcp rweb" or "0.0.0.0:10000-40000/udp media", for the kernel
        comment."""
        p, dport = self.port, self.match.dport
        host_ip = p.host_ip if self.match.daddr is not None or not self.widened \
            else ("::" if p.family == 6 else "0.0.0.0")
        host = f"[{host_ip}]" if p.family == 6 else host_ip
        span = f"{dport.low}-{dport.high}" if dport is not None and dport.low != dport.high \
            else str(p.host_port)
        return f"{host}:{span}/{p.proto} {p.container}" + (f" {self.widened}"
                                                          if self.widened else "")


@dataclass(frozen=True)
class Ruleset:
    rules: tuple[KernelRule, ...]
    sets: tuple[AddrSet, ...]
    default: DefaultAction
    default_origin: Origin | None
    protect_direct_routing: bool
    protect_localhost_publish: bool
    # Docker networks' bridges that passed the host check (core/bridges.py): what arrives on
    # one from its subnets is the network's own and not judged; what leaves into one is.
    bridges: tuple[TrustedBridge, ...]
    # Networks whose bridge has a name the kernel cannot be given literally (core/kernel_text):
    # new connections to their subnets (CIDRs, both families) are judged instead.
    bridge_subnets: tuple[str, ...] = ()
    # (Every DNATed new connection that comes from no Docker bridge is judged anyway, whatever it
    # leaves by: the renderers' forward chain. That covers a bridge known by neither.)
    limit: RateLimit = LIMIT  # what every `limit` rule means
    direct_ok: tuple[DirectOk, ...] = ()
    input_ports: tuple[InputPort, ...] = ()
    # Bridges Docker names that failed the check: nothing in the kernel, said by plan and status.
    refused_bridges: tuple[RefusedBridge, ...] = ()
    # The host's own bridges (not Docker's, core/bridges.host_bridges): left out of the
    # catch-all that judges every new connection routed into a bridge without DNAT.
    host_bridges: tuple[str, ...] = ()
    # dockerd's cgroup (observe/proxy_cgroup.py): a new connection to a socket in it is one
    # docker-proxy serves, judged like a listed binding, whatever its port (the INPUT path's
    # catch-all, where a backend can match it). None: only the listed bindings are judged.
    proxy_cgroup: ProxyCgroup | None = None
    # What the default's decisions log (core/logging), and the tag every log line of this
    # ruleset carries so that the daemon knows which rules wrote it.
    log_default: bool = False
    # The default's refusal when audited (`mode audit`; core/audit): `default` is then allow,
    # what the kernel does, and this is what it would do.
    audit_default: str | None = None
    # What Docker publishes, (family, protocol, host port): each decision counts per port
    # (core/tallies).
    published: tuple[tuple[Family, L4, int], ...] = ()
    log_tag: str = ""

    def bridge_subnets_for(self, family: Family) -> tuple[str, ...]:
        return tuple(n for n in self.bridge_subnets if (":" in n) == (family == 6))

    def for_family(self, family: Family) -> tuple[KernelRule, ...]:
        return tuple(r for r in self.rules if r.match.family == family)

    def sets_for(self, family: Family) -> tuple[AddrSet, ...]:
        return tuple(s for s in self.sets if s.family == family)

    def direct_ok_for(self, family: Family) -> tuple[DirectOk, ...]:
        return tuple(d for d in self.direct_ok if d.family == family)

    def input_ports_for(self, family: Family) -> tuple[InputPort, ...]:
        return tuple(p for p in self.input_ports if p.match.family == family)
