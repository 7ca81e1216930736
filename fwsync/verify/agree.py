"""Do the kernel's rules give the policy's verdicts? Per published binding, per family, over
every source set the rules name plus "anyone else".

The policy's verdict comes from the one matcher fwsync has (fwsync.core.explain.decide, which
`explain` and `status` use); the kernel's from fwsync.verify.kernel, which reads the backend's
listing itself. Each binding is asked on the DNAT path (the forward hook; a binding on a routed
network: straight to the container's address) and, when the ruleset judges it there, on the
input path (docker-proxy).

Sources tried, per family: from every CIDR in the rules' `saddr`s and in the ruleset's sets, its
first and last address and the addresses just outside each (so every region of overlapping
networks is met), plus an address in none of them. Bounded: a set of more than SET_SAMPLE
elements is sampled (every k-th element, deterministically: the same sample every time), and at
most MAX_SOURCES sources are tried per family (first and last addresses before the ones just
outside; again every k-th of them, sorted, when there are more). The destinations of
an all-address binding are the rules' `daddr`s of that family plus one address in none.

A DNATed connection carries the binding's container address after DNAT (what an allow `to
container` also matches) and leaves on that container's bridge. Each trusted bridge's
exemption is asked from both sides: an address of its network's subnets arriving on it is the
network's own (not judged), and the same address arriving elsewhere, and other sources arriving
on it, are judged like any (at most BRIDGE_SOURCES of those). A connection routed straight to a
container on a network made later, out of a bridge nobody named, is held to the direct-routing
protection (or, off, to the rules).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from fwsync.core.bridges import TrustedBridge
from fwsync.core.diff import State
from fwsync.core.explain import Connection as Question
from fwsync.core.explain import decide
from fwsync.core.exposure_report import through_docker_proxy
from fwsync.core.observed import PublishedPort
from fwsync.core.ruleset import Family, Ruleset
from fwsync.verify.connection import Connection, Path
from fwsync.verify.kernel import Reading, run

T = TypeVar("T")
SET_SAMPLE = 64  # elements of one set tried at most
MAX_SOURCES = 512  # sources tried per family
BRIDGE_SOURCES = 16  # sources from outside a trusted bridge's subnets tried arriving on it
# Addresses for "anyone else": the first one no rule or set names is used.
_OTHERS = {4: ("192.0.2.77", "100.64.7.7", "10.254.3.9", "172.31.9.9", "1.2.3.4", "223.1.2.3"),
           6: ("2001:db8:ffff::77", "fd00:7::7", "2a01:7::7", "3fff::9", "2400:cb00::1", "::2")}
_HOSTS = {4: ("203.0.113.254", "198.51.100.254", "192.0.2.254"),
          6: ("2001:db8:fffe::1", "2001:db8:fffd::1", "fd00:fffe::1")}
_IFACES = ("eth0", "ens3", "wan9", "vfy0x")
_SPORTS = (40000, 1234, 65535, 1)


@dataclass(frozen=True)
class Disagreement:
    family: Family
    binding: str  # e.g. "0.0.0.0:8080/tcp web" (the published binding, as status shows one)
    path: str  # "dnat" or "input" ("direct" for a binding on a routed network: no DNAT)
    source: str  # the address tried
    policy: str  # the policy's verdict (the matcher's); "unjudged": a network's own traffic
    kernel: str  # kernel_verdict's answer
    iif: str = ""  # where it arrived, when that is what was asked (a trusted bridge)

    def __str__(self) -> str:
        via = "" if self.path != "input" else " (docker-proxy)"
        on = f" arriving on {self.iif}" if self.iif else ""
        return (f"{self.source}{on} → {self.binding}{via}: policy {self.policy}, kernel "
                f"{self.kernel}")


def binding_text(p: PublishedPort) -> str:
    host = f"[{p.host_ip}]" if p.family == 6 else p.host_ip
    return f"{host}:{p.host_port}/{p.proto} {p.container or p.owner}"


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _sampled(items: Sequence[T], cap: int) -> Sequence[T]:
    """Every k-th item, at most `cap` of them: the same sample every time."""
    if cap <= 0:
        return []
    if len(items) <= cap:
        return items
    step = len(items) / cap
    return [items[int(k * step)] for k in range(cap)]


def _nets(ruleset: Ruleset, family: Family, sample: bool) -> list[Net]:
    texts: list[str] = [r.match.saddr for r in ruleset.for_family(family)
                        if r.match.saddr is not None]
    for s in ruleset.sets_for(family):
        texts.extend(_sampled(s.elements, SET_SAMPLE) if sample else s.elements)
    return [ipaddress.ip_network(t, strict=False) for t in dict.fromkeys(texts)]


def sources(ruleset: Ruleset, family: Family) -> list[str]:
    """The representative sources of one family (see the module's docstring): the first and
    last address of every CIDR, then the addresses just outside them, as many as the cap
    leaves room for; then one address in none."""
    top = (1 << (32 if family == 4 else 128)) - 1
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    inside: set[int] = set()
    outside: set[int] = set()
    for net in _nets(ruleset, family, sample=True):
        lo, hi = int(net.network_address), int(net.broadcast_address)
        inside.update((lo, hi))
        outside.update(p for p in (lo - 1, hi + 1) if 0 <= p <= top)
    room = MAX_SOURCES - 1
    points = list(_sampled(sorted(inside), room))
    points += _sampled(sorted(outside - inside), room - len(points))
    chosen = [str(cls(p)) for p in sorted(points)]
    other = _outside(ruleset, family)
    if other is not None:
        chosen.append(other)
    return chosen


def _outside(ruleset: Ruleset, family: Family) -> str | None:
    named = [r.match.saddr for r in ruleset.for_family(family) if r.match.saddr is not None]
    sets = ruleset.sets_for(family)
    for candidate in _OTHERS[family]:
        addr = ipaddress.ip_address(candidate)
        if any(addr in ipaddress.ip_network(n) for n in named):
            continue
        if any(s.holds(addr) for s in sets):
            continue
        return candidate
    return None


def destinations(ruleset: Ruleset, p: PublishedPort) -> list[str]:
    """The original destinations to try: the binding's own address; for an all-address one,
    every `daddr` the rules of its family name, and one address none names."""
    if not p.all_addresses:
        return [str(ipaddress.ip_address(p.host_ip))]
    family: Family = 6 if p.family == 6 else 4
    named = [ipaddress.ip_network(n) for n in dict.fromkeys(
        r.match.daddr for r in ruleset.for_family(family) if r.match.daddr is not None)]
    out = [str(n.network_address) for n in named]
    other = next((c for c in _HOSTS[family]
                  if not any(ipaddress.ip_address(c) in n for n in named)), None)
    if other is not None:
        out.append(other)
    return out


def unnamed_stand_ins(ruleset: Ruleset) -> tuple[str, int]:
    """An arriving interface and a source port no rule names, so that the matcher's answer
    (which leaves rules on them aside as exceptions) is the answer for this connection."""
    ifaces = [r.match.iface for r in ruleset.rules if r.match.iface is not None] + \
        [b.name for b in ruleset.bridges]

    iif = next((i for i in _IFACES if not _named(i, ifaces)), _IFACES[-1])
    sports = [r.match.sport for r in ruleset.rules if r.match.sport is not None]
    sport = next((s for s in _SPORTS if not any(r.low <= s <= r.high for r in sports)),
                 _SPORTS[0])
    return iif, sport


def _named(name: str, ifaces: Sequence[str]) -> bool:
    return any(name == i or (i.endswith("+") and name.startswith(i[:-1])) for i in ifaces)


def _holds(cidrs: Sequence[str], addr: str) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a.version == n.version and a in n
               for n in (ipaddress.ip_network(c, strict=False) for c in cidrs))


def container_address(p: PublishedPort) -> str | None:
    """Where Docker's DNAT sends the binding's connections: the container's own address of
    the binding's family (None: not known, or none: docker-proxy serves that family)."""
    for text in p.container_addrs:
        addr = ipaddress.ip_interface(text).ip
        if addr.version == (6 if p.family == 6 else 4):
            return str(addr)
    return None


def leaving_bridge(ruleset: Ruleset, family: Family, addr: str | None) -> str:
    """The bridge a connection to the container address `addr` leaves on: the trusted bridge
    (or the network let to the rules, DirectOk) whose subnet holds it; docker0 otherwise."""
    if addr is not None:
        for ok in ruleset.direct_ok_for(family):
            if ok.bridge and _holds((ok.subnet,), addr):
                return ok.bridge
        for bridge in ruleset.bridges:
            if _holds(bridge.subnets_for(family), addr):
                return bridge.name
    return "docker0"


def _after_routing(ruleset: Ruleset, p: PublishedPort, path: Path, daddr: str
                   ) -> tuple[str | None, str | None]:
    """(the container address after DNAT, the interface it leaves on) for binding `p` on
    `path`: on the input path, neither."""
    family: Family = 6 if p.family == 6 else 4
    dnat = container_address(p) if path == "dnat" else None
    oif = None if path == "input" else leaving_bridge(
        ruleset, family, dnat if path == "dnat" else daddr)
    return dnat, oif


def binding_connection(ruleset: Ruleset, p: PublishedPort, path: Path, source: str, daddr: str,
                       iif: str, sport: int) -> Connection:
    """`source` connecting to binding `p` at `daddr`, on `path`, as the kernel's rules see
    it: DNATed to the container's address, out of its bridge; on the input path, to the host."""
    dnat, oif = _after_routing(ruleset, p, path, daddr)
    return Connection(family=6 if p.family == 6 else 4, proto=p.proto, saddr=source,
                      daddr=daddr, dport=p.host_port, sport=sport, iif=iif, oif=oif, path=path,
                      local=path == "input", dnat_daddr=dnat,
                      socket_cgroup=proxy_socket(ruleset, path))


def proxy_socket(ruleset: Ruleset, path: Path) -> tuple[int, str] | None:
    """The cgroup of the socket a connection on `path` reaches: docker-proxy's, in dockerd's
    cgroup, on the input path (None: not known)."""
    cgroup = ruleset.proxy_cgroup
    return None if path != "input" or cgroup is None else (cgroup.level, cgroup.nft_path)


def direct_policy(ruleset: Ruleset, family: Family, daddr: str) -> str | None:
    """The verdict for a connection routed straight to a container address, when the
    direct-routing protection gives it ("deny": dropped, no DirectOk lets that address to the
    rules); None: the rules decide."""
    if not ruleset.protect_direct_routing:
        return None
    if any(_holds((ok.subnet,), daddr) for ok in ruleset.direct_ok_for(family)):
        return None
    return "deny"


def _input_key(family: int, proto: str, port: int, daddr: str | None
               ) -> tuple[int, str, int, str | None]:
    return family, proto, port, daddr


def agrees(policy: str, kernel: str) -> bool:
    """The kernel's verdict is the policy's. An allow only ever means that fwsync does not
    refuse the connection (its rules RETURN / accept, and Docker's and the host's chains decide
    after them), so a connection fwsync's chains do not judge at all agrees with it too; for
    a deny, reject or limit that is a hole. A trusted network's own traffic (policy
    "unjudged") agrees with a RETURN / accept too, and with nothing that refuses it."""
    passed = ("allow", "unjudged")
    return kernel == policy or (policy in passed and kernel in passed)


LATER = "a port published later"
_LATER_PORTS = (49999, 40999, 31999, 20999, 65001)
# Out of a bridge Docker makes later, whose name no rule or exemption can know yet.
_LATER_OIF = "vfylater0"
# The same, for a connection routed straight to a container there (no DNAT): nftables judges
# any bridge by its kind (`meta oifkind`); iptables can only judge the names Docker gives its
# own bridges (`-o br-+`), and what it cannot close (a name of the user's) is said first by
# status and doctor (core/networks.IPTABLES_GAP), so its stand-in is named as Docker names one.
_LATER_BRIDGE = {"iptables": "br-vfylater0"}
# A container address on that later network: the first in no subnet the ruleset knows.
_LATER_ADDRS = {4: ("172.31.254.2", "10.255.254.2", "192.168.254.2", "100.127.254.2"),
                6: ("fd00:fd0c:fe::2", "2001:db8:fd0c:fe::2", "fdff:fe::2")}


def later_ports(ruleset: Ruleset) -> tuple[PublishedPort, ...]:
    """Stand-ins for what Docker may publish after this check, on a host port no rule names, in
    each family and protocol: the DNAT catch-all must hold them to the policy (its default, or
    a rule with no port) before any apply names them."""
    named = [r.match.dport for r in ruleset.rules if r.match.dport is not None]
    # Nor one the input path's catch-all leaves to the host (dockerd's own sockets).
    own = {port for _proto, port in ruleset.proxy_cgroup.own_ports} \
        if ruleset.proxy_cgroup is not None else set()
    port = next((p for p in _LATER_PORTS if not any(d.low <= p <= d.high for d in named)
                 and p not in own), None)
    if port is None:
        return ()
    return tuple(PublishedPort(host, port, proto, LATER, 0)
                 for host in ("0.0.0.0", "::") for proto in ("tcp", "udp"))


def disagreements(ruleset: Ruleset, ports: Sequence[PublishedPort], backend: str,
                  state: State) -> tuple[Disagreement, ...]:
    """Where the kernel's objects (`state`, as the backend's read() lists them) give another
    verdict than the policy (`ruleset`, through the matcher) for a binding in `ports`: every
    binding on the DNAT path (a routed network's: "direct", straight to the container's
    address), and on the input path too where the ruleset judges it there; and a port Docker
    publishes after this (later_ports), which only the catch-all judges. Empty: they agree for
    every source tried (the module's docstring says which)."""
    later = later_ports(ruleset)
    ports = (*ports, *later)
    iif, sport = unnamed_stand_ins(ruleset)
    named_ifaces = [r.match.iface for r in ruleset.rules if r.match.iface is not None]
    # A bridge a rule names (`on IFACE`): the matcher leaves such rules aside, so its answer is
    # not the one for connections arriving there; not asked.
    bridges = [b for b in ruleset.bridges if not _named(b.name, named_ifaces)]
    on_input = {_input_key(ip.match.family, str(ip.match.proto), ip.match.dport.low,
                           ip.match.daddr)
                for ip in ruleset.input_ports if ip.match.dport is not None}
    reading = Reading(backend, state)
    found: list[Disagreement] = []
    froms: dict[int, list[str]] = {}
    # Per family, the sources asked besides froms: (source, whether the policy's verdict is
    # "not judged" (the network's own), arriving on, the bridge asked about).
    besides: dict[int, list[tuple[str, bool, str, str]]] = {}
    for p in ports:
        family: Family = 6 if p.family == 6 else 4
        if family not in froms:
            froms[family] = sources(ruleset, family)
            besides[family] = _bridge_sources(bridges, family, froms[family], iif)
        paths: list[Path] = ["direct" if p.routed else "dnat"]
        daddr_key = None if p.all_addresses else str(ipaddress.ip_network(p.host_ip))
        # The input path where connections from outside take it: docker-proxy serving IPv6 for
        # a container without IPv6 (core/exposure_report). Where Docker DNATs the family, no
        # outside connection reaches docker-proxy's socket, whatever fwsync's input chain says.
        if through_docker_proxy(p) and \
                _input_key(family, p.proto, p.host_port, daddr_key) in on_input:
            paths.append("input")
        elif p in later and family == 6 and ruleset.proxy_cgroup is not None \
                and backend == "nftables":
            # A port docker-proxy serves from after this: the input path's catch-all's alone.
            paths.append("input")
        for path in paths:
            prog = reading.program(family, path)
            for daddr in destinations(ruleset, p):
                to = ipaddress.ip_address(daddr)
                direct = direct_policy(ruleset, family, daddr) if path == "direct" else None
                dnat, oif = _after_routing(ruleset, p, path, daddr)
                if p in later and path != "input":
                    oif = _LATER_OIF
                asked = [(source, False, iif, "") for source in froms[family]]
                for source, own, arriving, on in (*asked, *besides[family]):
                    policy = "unjudged" if own else direct or decide(ruleset, Question(
                        ipaddress.ip_address(source), p.host_port, p.proto, to), to).action
                    conn = Connection(family=family, proto=p.proto, saddr=source, daddr=daddr,
                                      dport=p.host_port, sport=sport, iif=arriving, oif=oif,
                                      path=path, local=path == "input", dnat_daddr=dnat,
                                      socket_cgroup=proxy_socket(ruleset, path))
                    kernel = run(prog, conn)
                    if not agrees(policy, kernel):
                        found.append(Disagreement(family, binding_text(p), path, source,
                                                  policy, kernel, on))
    found.extend(_later_direct(ruleset, reading, backend, later, froms, iif, sport))
    return tuple(found)


def _bridge_sources(bridges: Sequence[TrustedBridge], family: Family, froms: Sequence[str],
                    iif: str) -> list[tuple[str, bool, str, str]]:
    """What each trusted bridge's exemption is asked: its subnets' addresses arriving on it
    (the network's own: not judged) and arriving on `iif` (judged), and sources from outside
    them arriving on it (judged). (source, own, arriving on, the bridge asked about)."""
    out: list[tuple[str, bool, str, str]] = []
    for bridge in bridges:
        for source in _own_sources(bridge, family):
            out += [(source, True, bridge.name, bridge.name), (source, False, iif, "")]
        out += [(source, False, bridge.name, bridge.name)
                for source in _strangers(froms, bridge, family)]
    return out


def _own_sources(bridge: TrustedBridge, family: Family) -> list[str]:
    """Addresses of a trusted bridge's network: the first and last host of each subnet."""
    out: list[str] = []
    for cidr in bridge.subnets_for(family):
        net = ipaddress.ip_network(cidr, strict=False)
        if net.num_addresses >= 4:
            out.extend((str(net.network_address + 1), str(net.broadcast_address - 1)))
        else:
            out.append(str(net.network_address))
    return list(dict.fromkeys(out))


def _strangers(froms: Sequence[str], bridge: TrustedBridge, family: Family) -> list[str]:
    """Sources from outside the bridge's subnets (sampled; the address in no rule's always
    among them): arriving on the bridge, they are judged like any."""
    subnets = bridge.subnets_for(family)
    outside = [s for s in froms if not _holds(subnets, s)]
    if not outside:
        return []
    return [*_sampled(outside[:-1], BRIDGE_SOURCES - 1), outside[-1]]


def _later_direct(ruleset: Ruleset, reading: Reading, backend: str,
                  later: Sequence[PublishedPort], froms: dict[int, list[str]], iif: str,
                  sport: int) -> list[Disagreement]:
    """A connection routed straight (no DNAT) to a container on a network made after this
    check, out of a bridge nobody named: dropped by the direct-routing protection, or (off)
    judged by the rules, never unjudged."""
    found: list[Disagreement] = []
    oif = _LATER_BRIDGE.get(backend, _LATER_OIF)
    for p in later:
        family: Family = 6 if p.family == 6 else 4
        known = [*ruleset.bridge_subnets_for(family), *(ok.subnet for ok in
                                                        ruleset.direct_ok_for(family)),
                 *(c for b in ruleset.bridges for c in b.subnets_for(family))]
        daddr = next((a for a in _LATER_ADDRS[family] if not _holds(known, a)), None)
        if daddr is None or family not in froms:
            continue
        to = ipaddress.ip_address(daddr)
        prog = reading.program(family, "direct")
        for source in froms[family]:
            policy = direct_policy(ruleset, family, daddr) or decide(
                ruleset, Question(ipaddress.ip_address(source), p.host_port, p.proto, to),
                to).action
            conn = Connection(family=family, proto=p.proto, saddr=source, daddr=daddr,
                              dport=p.host_port, sport=sport, iif=iif, oif=oif, path="direct")
            kernel = run(prog, conn)
            if not agrees(policy, kernel):
                found.append(Disagreement(family, f"{daddr}:{p.host_port}/{p.proto} {LATER} "
                                          "(direct)", "direct", source, policy, kernel))
    return found
