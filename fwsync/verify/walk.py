"""The walk through parsed chains, common to both backends, and the pieces their parsers build
rules from (address and port intervals, tests on a connection). See kernel.py for the verdicts."""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fwsync.verify.connection import Connection

KernelVerdict = str  # "allow" | "deny" | "reject" | "limit" | "unjudged" | "unreadable: ..."
_MAX_STEPS = 10_000

Tri = bool | None  # None: depends on what the connection's description leaves open
Test = Callable[[Connection], Tri]


class Unreadable(ValueError):
    """A line or expression the verifier does not understand."""


# -- addresses and ports as integer intervals -----------------------------------------------

def ip_int(text: str) -> tuple[int, int]:
    """(family, integer) of one address, without building an ipaddress object (sets hold
    100k of them)."""
    if ":" in text:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")


def span(text: str) -> tuple[int, int, int]:
    """(family, first, last) of an address, CIDR or `a-b` range as the kernel lists one."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return net.version, int(net.network_address), int(net.broadcast_address)
        if "-" in text:
            lo_text, hi_text = text.split("-", 1)
            (f1, lo), (f2, hi) = ip_int(lo_text), ip_int(hi_text)
            if f1 != f2 or lo > hi:
                raise Unreadable(text)
            return f1, lo, hi
        family, value = ip_int(text)
        return family, value, value
    except (OSError, ValueError) as exc:
        raise Unreadable(text) from exc


@dataclass
class Intervals:
    """Disjoint sorted [lo, hi] intervals and single values, for one membership question each."""

    single: set[int] = field(default_factory=set)
    los: list[int] = field(default_factory=list)
    his: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, spans: Iterable[tuple[int, int]]) -> Intervals:
        out = cls()
        ranges: list[tuple[int, int]] = []
        for lo, hi in spans:
            if lo == hi:
                out.single.add(lo)
            else:
                ranges.append((lo, hi))
        ranges.sort()
        for lo, hi in ranges:
            if out.his and lo <= out.his[-1] + 1:
                out.his[-1] = max(out.his[-1], hi)
            else:
                out.los.append(lo)
                out.his.append(hi)
        return out

    def __contains__(self, value: int) -> bool:
        if value in self.single:
            return True
        i = bisect.bisect_right(self.los, value) - 1
        return i >= 0 and value <= self.his[i]


@dataclass
class AddrSet:
    """A listed set of addresses: its single addresses as the kernel spells them (a big set is
    mostly these: compared as text, not parsed, 100k in ~5 ms instead of ~60), its networks and
    ranges as intervals."""

    family: int
    members: Intervals
    spelled: frozenset[str] = frozenset()

    @classmethod
    def of(cls, family: int, elements: Iterable[str]) -> AddrSet:
        texts = elements if isinstance(elements, tuple | list) else tuple(elements)
        spelled = frozenset(e for e in texts if "/" not in e and "-" not in e)
        spans = []
        for e in texts:
            if "/" in e or "-" in e:
                f, lo, hi = span(e)
                if f != family:
                    raise Unreadable(f"{e} in a set of IPv{family} addresses")
                spans.append((lo, hi))
        # What the kernel lists is well formed; a single address of the other family or not an
        # address at all would still be unreadable, so one of them is checked as a witness.
        for e in itertools.islice(spelled, 1):
            try:
                socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, e)
            except OSError as exc:
                raise Unreadable(f"{e} in a set of IPv{family} addresses") from exc
        return cls(family, Intervals.of(spans), spelled)

    def has(self, addr: str) -> bool:
        family, value = ip_int(addr)
        if family != self.family:
            return False
        if self.spelled and any(t in self.spelled for t in _spellings(family, value)):
            return True
        return value in self.members


def _spellings(family: int, value: int) -> tuple[str, ...]:
    """How ipset and nft may print this address: the compressed form, and for an IPv4-mapped
    IPv6 address the dotted one (`::ffff:198.51.100.7`)."""
    if family == 4:
        return (str(ipaddress.IPv4Address(value)),)
    v6 = ipaddress.IPv6Address(value)
    mapped = v6.ipv4_mapped
    return (str(v6),) if mapped is None else (str(v6), f"::ffff:{mapped}")


def port_span(text: str, sep: str) -> tuple[int, int]:
    lo, _, hi = text.partition(sep)
    if not lo.isdigit() or (hi and not hi.isdigit()):
        raise Unreadable(text)
    return int(lo), int(hi or lo)



@dataclass(frozen=True)
class Rule:
    text: str
    tests: tuple[Test, ...] = ()
    # kind: return | accept | drop | reject | jump | goto | none (no verdict: go on)
    target: tuple[str, str] = ("none", "")
    limit: bool = False  # a rate meter: over the rate the rule fires, under it does not
    # every test is on conntrack state or the arriving interface (and maybe the source with it):
    # see steps_aside()
    steps_aside: bool = False
    error: str | None = None  # not understood
    # A set that traffic fills (a limit's sources), named with its key, "SET KEY": the rule's
    # `update @SET { KEY }` takes the source in (while the set has room); a lookup in it, and
    # whether negated (`KEY != @SET`). See _walk.
    admits: str | None = None
    looks_in: tuple[str, bool] | None = None


@dataclass
class Program:
    """One backend's objects, parsed once, for any number of connections."""

    chains: dict[str, list[Rule]]
    entry: str | None  # the chain a connection enters; None: fwsync's chains are not reached
    entry_chains: frozenset[str]  # where a rule that steps aside means "unjudged"
    policy: str = "unjudged"  # what running off the end of the entry chain gives
    error: str | None = None  # the whole listing is unreadable (why)


Frame = tuple[str, int]
# What this walk's `update`s did to sets that traffic fills: (SET KEY, whether the source was
# taken in). The verifier knows no traffic: only a set this connection updated is known.
Filled = frozenset[tuple[str, bool]]


def run(program: Program, conn: Connection) -> KernelVerdict:
    if program.error is not None:
        return f"unreadable: {program.error}"
    if program.entry is None:
        return "unjudged"
    return _walk(program, ((program.entry, 0),), conn, [0], frozenset())


def _exit(program: Program, chain: str, rule: Rule) -> KernelVerdict:
    return "unjudged" if chain in program.entry_chains and rule.steps_aside else "allow"


def _fire(program: Program, stack: tuple[Frame, ...], chain: str, rule: Rule,
          conn: Connection, steps: list[int], filled: Filled) -> KernelVerdict:
    kind, arg = rule.target
    if kind == "accept":
        return _exit(program, chain, rule)
    if kind == "drop":
        return "deny"
    if kind == "reject":
        return "reject"
    if kind == "return":
        if len(stack) == 1:
            return _exit(program, chain, rule) if program.policy == "unjudged" \
                else program.policy
        return _walk(program, stack[:-1], conn, steps, filled)
    if kind in ("jump", "goto"):
        if arg not in program.chains:
            return f"unreadable: {rule.text} (no chain {arg} is listed)"
        base = stack if kind == "jump" else stack[:-1]
        return _walk(program, (*base, (arg, 0)), conn, steps, filled)
    return _walk(program, stack, conn, steps, filled)  # no verdict: the next rule


def _both(line: str, yes: KernelVerdict, no: KernelVerdict, why: str) -> KernelVerdict:
    for v in (yes, no):
        if v.startswith("unreadable"):
            return v
    return yes if yes == no else f"unreadable: {line} ({why})"


def _held(filled: Filled, entry: str) -> bool | None:
    for name, taken in filled:
        if name == entry:
            return taken
    return None


def _walk(program: Program, stack: tuple[Frame, ...], conn: Connection, steps: list[int],
          filled: Filled) -> KernelVerdict:
    while True:
        steps[0] += 1
        if steps[0] > _MAX_STEPS:
            return "unreadable: the chains loop"
        chain, pos = stack[-1]
        rules = program.chains[chain]
        if pos >= len(rules):
            if len(stack) == 1:
                return program.policy
            stack = stack[:-1]
            continue
        rule = rules[pos]
        stack = (*stack[:-1], (chain, pos + 1))
        if rule.error is not None:
            return f"unreadable: {rule.text} ({rule.error})"
        unknown = False
        matched = True
        for test in rule.tests:
            answer = test(conn)
            if answer is False:
                matched = False
                break
            if answer is None:
                unknown = True
        if not matched:
            continue
        if rule.looks_in is not None:
            entry, negative = rule.looks_in
            held = _held(filled, entry)
            if held is None:
                return (f"unreadable: {rule.text} (a lookup in a set that traffic fills, not "
                        "updated with this connection's source before)")
            if held == negative:
                continue
        if unknown:
            return _both(rule.text, _fired(program, stack, chain, rule, conn, steps, filled),
                         _walk(program, stack, conn, steps, filled),
                         "depends on the destination after DNAT")
        return _fired(program, stack, chain, rule, conn, steps, filled)


def _fired(program: Program, stack: tuple[Frame, ...], chain: str, rule: Rule,
           conn: Connection, steps: list[int], filled: Filled) -> KernelVerdict:
    if rule.admits is not None and _held(filled, rule.admits) is None:
        # Both ways the update can go: the source taken in (the set has room, or holds it
        # already), or not (the set is full). Full, the source must be refused ("limit": the
        # meter's refusals are the rate's and, at capacity, the sources' set's).
        taken = _metered(program, stack, chain, rule, conn, steps,
                         filled | {(rule.admits, True)})
        full = _metered(program, stack, chain, rule, conn, steps,
                        filled | {(rule.admits, False)})
        if taken == "limit" and full in ("reject", "deny"):
            return "limit"
        return _both(rule.text, taken, full, "a set of sources that, full, does not refuse one")
    return _metered(program, stack, chain, rule, conn, steps, filled)


def _metered(program: Program, stack: tuple[Frame, ...], chain: str, rule: Rule,
             conn: Connection, steps: list[int], filled: Filled) -> KernelVerdict:
    if not rule.limit:
        return _fire(program, stack, chain, rule, conn, steps, filled)
    over = _fire(program, stack, chain, rule, conn, steps, filled)
    under = _walk(program, stack, conn, steps, filled)
    if under == "allow" and over in ("reject", "deny"):
        return "limit"
    return _both(rule.text, over, under, "a rate limit that does not refuse over its rate "
                 "and let on under it")


# -- matches, as tests on a connection --------------------------------------------------------

def iface_match(pattern: str, wildcard: str) -> Callable[[str | None], bool]:
    if pattern.endswith(wildcard):
        prefix = pattern[:-1]
        return lambda name: name is not None and name.startswith(prefix)
    return lambda name: name == pattern


def net_test(cidr: str, get: Callable[[Connection], str | None]) -> Test:
    family, lo, hi = span(cidr)

    def test(conn: Connection) -> Tri:
        addr = get(conn)
        if addr is None:
            return None
        f, value = ip_int(addr)
        return f == family and lo <= value <= hi
    return test


def port_test(lo: int, hi: int, get: Callable[[Connection], int | None]) -> Test:
    def test(conn: Connection) -> Tri:
        port = get(conn)
        return None if port is None else lo <= port <= hi
    return test


def negated(test: Test) -> Test:
    def inverse(conn: Connection) -> Tri:
        answer = test(conn)
        return None if answer is None else not answer
    return inverse


def iface_test(match: Callable[[str | None], bool], arriving: bool) -> Test:
    return lambda c: match(c.iif if arriving else c.oif)


def proto_test(proto: str) -> Test:
    return lambda c: proto == "all" or c.proto == proto


def kind_test(kind: str) -> Test:
    """`meta oifkind KIND`: the leaving interface's kind (no interface leaves on the input
    path: no match, as in the kernel)."""
    return lambda c: c.oif is not None and c.oifkind == kind


def steps_aside(kinds: Iterable[str]) -> bool:
    """A rule that steps aside instead of judging (Rule.steps_aside), from what its tests are
    on: only the conntrack state or the arriving interface (not NEW, from lo), or the arriving
    interface with the source address (a Docker network's own traffic: its bridge and subnet,
    `-s SUBNET -i BRIDGE` / `iifname BRIDGE ip saddr SUBNET`; "family" is the family nftables
    checks for such an address)."""
    found = set(kinds)
    if not found:
        return False
    return found <= {"state", "iif"} or (found <= {"iif", "saddr", "family"}
                                         and {"iif", "saddr"} <= found)


def family_test(family: int) -> Test:
    return lambda c: c.family == family


def state_test(states: frozenset[str]) -> Test:
    return lambda c: bool(states & c.ct_states)


def source_in(aset: AddrSet) -> Test:
    return lambda c: aset.has(c.saddr)


CT_STATES = {"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"}
