"""The verdict fwsync's kernel objects give one connection, read from what the backend lists.

Input is a backend's `read()` State (fwsync/core/diff.py): for iptables the `iptables-save`
lines of fwsync's chains, its ipsets' elements and the jump object; for nftables the lines the
nftables backend prints from `nft -j list` for `table inet fwsync`. The lines are parsed here,
not by the renderers' code, and walked as the kernel walks them: from fwsync's entry
(FWSYNC-FORWARD as reached from DOCKER-USER / FWSYNC-INPUT from INPUT; the `forward` / `input`
base chains) down through jumps, gotos and returns to a verdict.

- "allow": fwsync lets it on (RETURN out of its chains, or accept).
- "deny" / "reject": dropped / rejected.
- "limit": a per-source rate meter decides: under the rate it is let on, over it refused.
- "unjudged": fwsync's chains do not look at it: not reached, left by a rule that steps
  aside (only the conntrack state or the arriving interface matched: not NEW, from lo or a
  Docker bridge), or the walk ran off the end of the entry chain.
- "unreadable: LINE": a line or expression this module does not understand was met before the
  verdict. Never a guess: callers treat it as a disagreement (fail closed).

Where an answer depends on what a connection's description leaves open (the destination after
Docker's DNAT, which the dnat path does not know) both outcomes are walked: equal, that is the
answer; different, the line is unreadable for this connection.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import shlex
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fwsync.core.diff import State
from fwsync.verify.connection import Connection

KernelVerdict = str  # "allow" | "deny" | "reject" | "limit" | "unjudged" | "unreadable: ..."

# The names fwsync gives its kernel objects (the backends' naming constants, written out here so
# that this module imports nothing of the renderers; tests/unit/test_verify_kernel.py holds
# them equal to the backends').
IPT_FORWARD = "FWSYNC-FORWARD"
IPT_INPUT = "FWSYNC-INPUT"
IPT_SET_NAME = re.compile(r"^fws([46])-(.+)-[0-9a-f]{6}$")
NFT_PREFIX = "inet fwsync "
NFT_TABLE_KEY = "inet fwsync table"
NFT_DORMANT = "flags dormant: the kernel runs none of the table's rules"
_JUMP_LINE = re.compile(r"^(\S+) rule [0-9]+ -j (\S+)$")
_MAX_STEPS = 10_000

Tri = bool | None  # None: depends on what the connection's description leaves open
Test = Callable[[Connection], Tri]


class Unreadable(ValueError):
    """A line or expression the verifier does not understand."""


# -- addresses and ports as integer intervals -----------------------------------------------

def _ip_int(text: str) -> tuple[int, int]:
    """(family, integer) of one address, without building an ipaddress object (sets hold
    100k of them)."""
    if ":" in text:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")


def _span(text: str) -> tuple[int, int, int]:
    """(family, first, last) of an address, CIDR or `a-b` range as the kernel lists one."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return net.version, int(net.network_address), int(net.broadcast_address)
        if "-" in text:
            lo_text, hi_text = text.split("-", 1)
            (f1, lo), (f2, hi) = _ip_int(lo_text), _ip_int(hi_text)
            if f1 != f2 or lo > hi:
                raise Unreadable(text)
            return f1, lo, hi
        family, value = _ip_int(text)
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
    family: int
    members: Intervals

    @classmethod
    def of(cls, family: int, elements: Iterable[str]) -> AddrSet:
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        spans = []
        for e in elements:
            if "/" in e or "-" in e:
                f, lo, hi = _span(e)
                if f != family:
                    raise Unreadable(f"{e} in a set of IPv{family} addresses")
                spans.append((lo, hi))
                continue
            try:  # a single address: most of a big set's elements (~0.5 µs each)
                value = int.from_bytes(socket.inet_pton(af, e), "big")
            except OSError as exc:
                raise Unreadable(f"{e} in a set of IPv{family} addresses") from exc
            spans.append((value, value))
        return cls(family, Intervals.of(spans))

    def has(self, addr: str) -> bool:
        family, value = _ip_int(addr)
        return family == self.family and value in self.members


def _port_span(text: str, sep: str) -> tuple[int, int]:
    lo, _, hi = text.partition(sep)
    if not lo.isdigit() or (hi and not hi.isdigit()):
        raise Unreadable(text)
    return int(lo), int(hi or lo)


# -- the walk, common to both backends --------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    text: str
    tests: tuple[Test, ...] = ()
    # kind: return | accept | drop | reject | jump | goto | none (no verdict: go on)
    target: tuple[str, str] = ("none", "")
    limit: bool = False  # a rate meter: over the rate the rule fires, under it does not
    steps_aside: bool = False  # every test is on conntrack state or the arriving interface
    error: str | None = None  # not understood


@dataclass
class Program:
    """One backend's objects, parsed once, for any number of connections."""

    chains: dict[str, list[Rule]]
    entry: str | None  # the chain a connection enters; None: fwsync's chains are not reached
    entry_chains: frozenset[str]  # where a rule that steps aside means "unjudged"
    policy: str = "unjudged"  # what running off the end of the entry chain gives
    error: str | None = None  # the whole listing is unreadable (why)


Frame = tuple[str, int]


def run(program: Program, conn: Connection) -> KernelVerdict:
    if program.error is not None:
        return f"unreadable: {program.error}"
    if program.entry is None:
        return "unjudged"
    return _walk(program, ((program.entry, 0),), conn, [0])


def _exit(program: Program, chain: str, rule: Rule) -> KernelVerdict:
    return "unjudged" if chain in program.entry_chains and rule.steps_aside else "allow"


def _fire(program: Program, stack: tuple[Frame, ...], chain: str, rule: Rule,
          conn: Connection, steps: list[int]) -> KernelVerdict:
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
        return _walk(program, stack[:-1], conn, steps)
    if kind in ("jump", "goto"):
        if arg not in program.chains:
            return f"unreadable: {rule.text} (no chain {arg} is listed)"
        base = stack if kind == "jump" else stack[:-1]
        return _walk(program, (*base, (arg, 0)), conn, steps)
    return _walk(program, stack, conn, steps)  # no verdict: the next rule


def _both(line: str, yes: KernelVerdict, no: KernelVerdict, why: str) -> KernelVerdict:
    for v in (yes, no):
        if v.startswith("unreadable"):
            return v
    return yes if yes == no else f"unreadable: {line} ({why})"


def _walk(program: Program, stack: tuple[Frame, ...], conn: Connection, steps: list[int]
          ) -> KernelVerdict:
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
        if unknown:
            return _both(rule.text, _fired(program, stack, chain, rule, conn, steps),
                         _walk(program, stack, conn, steps),
                         "depends on the destination after DNAT")
        return _fired(program, stack, chain, rule, conn, steps)


def _fired(program: Program, stack: tuple[Frame, ...], chain: str, rule: Rule,
           conn: Connection, steps: list[int]) -> KernelVerdict:
    if not rule.limit:
        return _fire(program, stack, chain, rule, conn, steps)
    over = _fire(program, stack, chain, rule, conn, steps)
    under = _walk(program, stack, conn, steps)
    if under == "allow" and over in ("reject", "deny"):
        return "limit"
    return _both(rule.text, over, under, "a rate limit that does not refuse over its rate "
                 "and let on under it")


# -- iptables ----------------------------------------------------------------------------------

def _iface_match(pattern: str, wildcard: str) -> Callable[[str | None], bool]:
    if pattern.endswith(wildcard):
        prefix = pattern[:-1]
        return lambda name: name is not None and name.startswith(prefix)
    return lambda name: name == pattern


def _net_test(cidr: str, get: Callable[[Connection], str | None]) -> Test:
    family, lo, hi = _span(cidr)

    def test(conn: Connection) -> Tri:
        addr = get(conn)
        if addr is None:
            return None
        f, value = _ip_int(addr)
        return f == family and lo <= value <= hi
    return test


def _port_test(lo: int, hi: int, get: Callable[[Connection], int | None]) -> Test:
    def test(conn: Connection) -> Tri:
        port = get(conn)
        return None if port is None else lo <= port <= hi
    return test


def _negated(test: Test) -> Test:
    def inverse(conn: Connection) -> Tri:
        answer = test(conn)
        return None if answer is None else not answer
    return inverse


def _iface_test(match: Callable[[str | None], bool], arriving: bool) -> Test:
    return lambda c: match(c.iif if arriving else c.oif)


def _proto_test(proto: str) -> Test:
    return lambda c: proto == "all" or c.proto == proto


def _family_test(family: int) -> Test:
    return lambda c: c.family == family


def _state_test(states: frozenset[str]) -> Test:
    return lambda c: bool(states & c.ct_states)


def _source_in(aset: AddrSet) -> Test:
    return lambda c: aset.has(c.saddr)


_CT_STATES = {"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"}


class _IptSets:
    def __init__(self, state: State, family: int) -> None:
        self.state, self.family = state, family
        self.parsed: dict[str, AddrSet] = {}

    def get(self, kernel_name: str) -> AddrSet:
        m = IPT_SET_NAME.match(kernel_name)
        if m is None or int(m.group(1)) != self.family:
            raise Unreadable(f"set {kernel_name} is not one of fwsync's IPv{self.family} sets")
        key = f"ipv{self.family} set {m.group(2)}"
        if key not in self.state:
            raise Unreadable(f"set {kernel_name} is not listed")
        if key not in self.parsed:
            self.parsed[key] = AddrSet.of(self.family, self.state[key])
        return self.parsed[key]


def _ipt_rule(line: str, sets: _IptSets, chains: Iterable[str]) -> Rule:
    try:
        return _ipt_parse(line, sets, set(chains))
    except (Unreadable, ValueError, IndexError) as exc:
        return Rule(line, error=str(exc))


def _ipt_parse(line: str, sets: _IptSets, chains: set[str]) -> Rule:
    words = shlex.split(line)
    if words[:1] != ["-A"] or len(words) < 2:
        raise Unreadable("not an -A line")
    tests: list[Test] = []
    kinds: list[str] = []
    target: tuple[str, str] = ("none", "")
    limit = False
    negate = False
    i = 2

    def add(test: Test, kind: str = "other") -> None:
        nonlocal negate
        tests.append(_negated(test) if negate else test)
        kinds.append(kind)
        negate = False

    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        i += 2
        if w == "!":
            negate, i = True, i - 1
        elif w == "-s":
            add(_net_test(nxt, lambda c: c.saddr))
        elif w == "-d":
            add(_net_test(nxt, lambda c: c.packet_daddr))
        elif w in ("-i", "-o"):
            add(_iface_test(_iface_match(nxt, "+"), w == "-i"), "iif" if w == "-i" else "other")
        elif w == "-p":
            add(_proto_test(nxt))
        elif w == "-m":
            if nxt not in ("conntrack", "set", "comment", "addrtype", "hashlimit", "tcp", "udp"):
                raise Unreadable(f"match -m {nxt}")
        elif w == "--comment":
            pass
        elif w == "--ctstate":
            wanted = frozenset(nxt.split(","))
            if not wanted <= _CT_STATES:
                raise Unreadable(f"--ctstate {nxt}")
            add(_state_test(wanted),
                "state" if negate and wanted == {"NEW"} else "other")
        elif w in ("--ctorigdst", "--ctorigsrc"):
            add(_net_test(nxt, (lambda c: c.daddr) if w == "--ctorigdst" else
                          (lambda c: c.saddr)))
        elif w in ("--ctorigdstport", "--ctorigsrcport", "--dport", "--sport"):
            lo, hi = _port_span(nxt, ":")
            get: Callable[[Connection], int | None] = {
                "--ctorigdstport": lambda c: c.dport, "--ctorigsrcport": lambda c: c.sport,
                "--dport": lambda c: c.packet_dport, "--sport": lambda c: c.sport}[w]
            add(_port_test(lo, hi, get))
        elif w == "--match-set":
            direction = words[i] if i < len(words) else ""
            i += 1
            if direction != "src":
                raise Unreadable(f"--match-set {nxt} {direction}")
            add(_source_in(sets.get(nxt)))
        elif w == "--dst-type":
            if nxt != "LOCAL":
                raise Unreadable(f"--dst-type {nxt}")
            add(lambda c: c.local)
        elif w == "--hashlimit-above":
            if negate:
                raise Unreadable("! --hashlimit-above")
            limit = True
        elif w in ("--hashlimit-burst", "--hashlimit-mode", "--hashlimit-name",
                   "--hashlimit-htable-expire", "--hashlimit-htable-size",
                   "--hashlimit-htable-max", "--hashlimit-srcmask"):
            if w == "--hashlimit-mode" and nxt != "srcip":
                raise Unreadable(f"--hashlimit-mode {nxt}")
        elif w in ("-j", "-g"):
            target = _ipt_target(w, nxt, chains)
            if target[0] == "reject" and words[i:i + 1] == ["--reject-with"]:
                i += 2
        else:
            raise Unreadable(f"{w}")
        if negate and w != "!":
            raise Unreadable(f"! {w}")
    steps_aside = bool(kinds) and all(k in ("state", "iif") for k in kinds)
    return Rule(line, tuple(tests), target, limit, steps_aside)


def _ipt_target(flag: str, name: str, chains: set[str]) -> tuple[str, str]:
    if flag == "-j" and name in ("RETURN", "ACCEPT", "DROP", "REJECT"):
        return {"RETURN": ("return", ""), "ACCEPT": ("accept", ""), "DROP": ("drop", ""),
                "REJECT": ("reject", "")}[name]
    if name in chains:
        return ("jump" if flag == "-j" else "goto", name)
    raise Unreadable(f"target {name}")


def iptables_program(state: State, family: int, path: str, sets: _IptSets | None = None
                     ) -> Program:
    prefix = f"ipv{family} chain "
    names = [key[len(prefix):] for key in state if key.startswith(prefix)]
    sets = sets or _IptSets(state, family)
    chains = {name: [_ipt_rule(line, sets, names) for line in state[prefix + name]]
              for name in names}
    wanted = IPT_INPUT if path == "input" else IPT_FORWARD
    entered = False
    for line in state.get(f"ipv{family} jump", ()):
        if line.startswith("not reached: "):
            return Program(chains, None, frozenset())
        m = _JUMP_LINE.match(line)
        if m is None:
            return Program(chains, None, frozenset(), error=line)
        if m.group(2) == wanted and (m.group(1) in ("DOCKER-USER", "FORWARD")
                                     if wanted == IPT_FORWARD else m.group(1) == "INPUT"):
            entered = True
    if not entered or wanted not in chains:
        return Program(chains, None, frozenset())
    return Program(chains, wanted, frozenset({wanted}))


# -- nftables ----------------------------------------------------------------------------------

@dataclass
class _NftSets:
    state: State
    parsed: dict[str, object] = field(default_factory=dict)

    def key(self, name: str) -> tuple[str, str]:
        prefix = f"{NFT_PREFIX}set {name} ("
        found = [k for k in self.state if k.startswith(prefix) and k.endswith(")")]
        if len(found) != 1:
            raise Unreadable(f"set @{name} is not listed")
        return found[0], found[0][len(prefix):-1]

    def addresses(self, name: str, family: int) -> AddrSet:
        key, kind = self.key(name)
        if kind != ("ipv4_addr" if family == 4 else "ipv6_addr"):
            raise Unreadable(f"set @{name} holds {kind}")
        if key not in self.parsed:
            self.parsed[key] = AddrSet.of(family, self.state[key])
        got = self.parsed[key]
        assert isinstance(got, AddrSet)
        return got

    def ports(self, name: str) -> Intervals:
        key, kind = self.key(name)
        if kind != "inet_service":
            raise Unreadable(f"set @{name} holds {kind}")
        if key not in self.parsed:
            self.parsed[key] = Intervals.of(_port_span(e, "-") for e in self.state[key])
        got = self.parsed[key]
        assert isinstance(got, Intervals)
        return got

    def meter(self, name: str, family: int) -> None:
        _key, kind = self.key(name)
        if kind != f"ipv{family}_addr, per-source limit":
            raise Unreadable(f"set @{name} holds {kind}")


class _Words:
    def __init__(self, words: list[str]) -> None:
        self.words, self.i = words, 0

    def next(self) -> str:
        if self.i >= len(self.words):
            raise Unreadable("the line ends too early")
        self.i += 1
        return self.words[self.i - 1]

    def peek(self) -> str:
        return self.words[self.i] if self.i < len(self.words) else ""

    def value(self) -> tuple[bool, list[str]]:
        """(negated, the values: one, or an anonymous set's `{ a, b }`)."""
        negated = self.peek() == "!="
        if negated:
            self.next()
        first = self.next()
        if first != "{":
            return negated, [first]
        values: list[str] = []
        while (w := self.next()) != "}":
            values.extend(v for v in w.split(",") if v)
        return negated, values


def _nft_comment(line: str) -> str:
    at = line.find(' comment "')
    if at < 0:
        return line
    if not line.endswith('"'):
        raise Unreadable("a comment that does not end the line")
    return line[:at]


def _any_of(tests: list[Test]) -> Test:
    def test(conn: Connection) -> Tri:
        answers = [t(conn) for t in tests]
        if any(a is True for a in answers):
            return True
        return None if any(a is None for a in answers) else False
    return test


def _nft_rule(line: str, sets: _NftSets, chains: set[str]) -> Rule:
    try:
        return _nft_parse(line, sets, chains)
    except (Unreadable, ValueError, IndexError) as exc:
        return Rule(line, error=str(exc))


def _addr_value(v: str, family: int, sets: _NftSets,
                get: Callable[[Connection], str | None]) -> Test:
    if v.startswith("@"):
        aset = sets.addresses(v[1:], family)

        def in_set(conn: Connection) -> Tri:
            addr = get(conn)
            return None if addr is None else aset.has(addr)
        return in_set
    f, _lo, _hi = _span(v)
    if f != family:
        raise Unreadable(f"{v} is not an IPv{family} address")
    return _net_test(v, get)


def _port_value(v: str, sets: _NftSets, get: Callable[[Connection], int | None]) -> Test:
    if v.startswith("@"):
        ports = sets.ports(v[1:])
        return lambda c: None if (p := get(c)) is None else p in ports
    lo, hi = _port_span(v, "-")
    return _port_test(lo, hi, get)


def _nft_parse(line: str, sets: _NftSets, chains: set[str]) -> Rule:
    words = _Words(_nft_comment(line).split())
    tests: list[Test] = []
    kinds: list[str] = []
    target: tuple[str, str] = ("none", "")
    limit = False

    def add(negated: bool, alternatives: list[Test], kind: str = "other") -> None:
        test = alternatives[0] if len(alternatives) == 1 else _any_of(alternatives)
        tests.append(_negated(test) if negated else test)
        kinds.append(kind)

    def family_only(family: int) -> None:
        # `ip ...` / `ct original ip ...` carry nftables' dependency on the family.
        tests.append(_family_test(family))
        kinds.append("other")

    while words.peek():
        if target != ("none", ""):
            raise Unreadable(f"{words.peek()} after the verdict")
        w = words.next()
        if w == "meta":
            key = words.next()
            neg, values = words.value()
            if key == "nfproto":
                if not set(values) <= {"ipv4", "ipv6"}:
                    raise Unreadable(f"meta nfproto {values}")
                add(neg, [_family_test(4 if v == "ipv4" else 6) for v in values])
            elif key == "l4proto":
                add(neg, [_proto_test(v) for v in values])
            elif key in ("iifname", "oifname"):
                matches = [_iface_match(v.strip('"'), "*") for v in values]
                arriving = key == "iifname"
                add(neg, [_iface_test(m, arriving) for m in matches],
                    "iif" if arriving and not neg else "other")
            else:
                raise Unreadable(f"meta {key}")
        elif w == "ct":
            key = words.next()
            if key == "original":
                field_ = words.next()
                if field_ in ("ip", "ip6"):
                    family = 4 if field_ == "ip" else 6
                    which = words.next()
                    if which not in ("saddr", "daddr"):
                        raise Unreadable(f"ct original {field_} {which}")
                    get = (lambda c: c.daddr) if which == "daddr" else (lambda c: c.saddr)
                    family_only(family)
                    neg, values = words.value()
                    add(neg, [_addr_value(v, family, sets, get) for v in values])
                elif field_ in ("proto-dst", "proto-src"):
                    pget: Callable[[Connection], int | None] = \
                        (lambda c: c.dport) if field_ == "proto-dst" else (lambda c: c.sport)
                    neg, values = words.value()
                    add(neg, [_port_value(v, sets, pget) for v in values])
                else:
                    raise Unreadable(f"ct original {field_}")
            elif key == "state":
                neg, values = words.value()
                if not {v.upper() for v in values} <= _CT_STATES:
                    raise Unreadable(f"ct state {values}")
                add(neg, [_state_test(frozenset({v.upper()})) for v in values],
                    "state" if neg and values == ["new"] else "other")
            elif key == "status":
                if words.peek() == "&":
                    words.next()
                    if words.next() != "dnat":
                        raise Unreadable("ct status & other than dnat")
                neg, values = words.value()
                if values != ["dnat"]:
                    raise Unreadable(f"ct status {values}")
                add(neg, [lambda c: "DNAT" in c.ct_states])
            else:
                raise Unreadable(f"ct {key}")
        elif w in ("ip", "ip6"):
            family = 4 if w == "ip" else 6
            which = words.next()
            if which not in ("saddr", "daddr"):
                raise Unreadable(f"{w} {which}")
            aget: Callable[[Connection], str | None] = \
                (lambda c: c.packet_daddr) if which == "daddr" else (lambda c: c.saddr)
            family_only(family)
            neg, values = words.value()
            add(neg, [_addr_value(v, family, sets, aget) for v in values])
        elif w == "fib":
            if [words.next(), words.next()] != ["daddr", "type"]:
                raise Unreadable("fib other than daddr type")
            neg, values = words.value()
            if values != ["local"]:
                raise Unreadable(f"fib daddr type {values}")
            add(neg, [lambda c: c.local])
        elif w == "update":
            meter = words.next()
            if not meter.startswith("@") or words.next() != "{":
                raise Unreadable("update")
            proto, key_field = words.next(), words.next()
            if proto not in ("ip", "ip6") or key_field != "saddr":
                raise Unreadable(f"a meter keyed by {proto} {key_field}")
            family = 4 if proto == "ip" else 6
            sets.meter(meter[1:], family)
            spec = [words.next() for _ in range(6)]
            if spec[:3] != ["limit", "rate", "over"] or spec[4] != "burst" \
                    or not spec[5].isdigit() or words.next() != "}":
                raise Unreadable(f"meter statement {' '.join(spec)}")
            family_only(family)
            limit = True
        elif w in ("accept", "drop", "return"):
            target = (w, "")
        elif w in ("jump", "goto"):
            name = words.next()
            if name not in chains:
                raise Unreadable(f"{w} {name}: no such chain is listed")
            target = (w, name)
        elif w == "reject":
            if words.peek() == "with":
                words.next()
                kind = words.next()
                if kind == "tcp":
                    if words.next() != "reset":
                        raise Unreadable("reject with tcp")
                elif kind in ("icmpx", "icmp", "icmpv6"):
                    words.next()
                else:
                    raise Unreadable(f"reject with {kind}")
            target = ("reject", "")
        else:
            raise Unreadable(w)
    steps_aside = bool(kinds) and all(k in ("state", "iif") for k in kinds)
    return Rule(line, tuple(tests), target, limit, steps_aside)


_HEAD = re.compile(r"^hook (\S+) priority (-?[0-9]+) policy (accept|drop)$")


def nftables_program(state: State, hook: str, sets: _NftSets | None = None) -> Program:
    if NFT_TABLE_KEY in state:
        if tuple(state[NFT_TABLE_KEY]) == (NFT_DORMANT,):
            return Program({}, None, frozenset())
        return Program({}, None, frozenset(), error=" ".join(state[NFT_TABLE_KEY]))
    prefix = f"{NFT_PREFIX}chain "
    names = {key[len(prefix):] for key in state if key.startswith(prefix)}
    sets = sets or _NftSets(state)
    chains: dict[str, list[Rule]] = {}
    bases: list[tuple[str, str]] = []
    for name in sorted(names):
        lines = state[prefix + name]
        if not lines:
            return Program({}, None, frozenset(), error=f"chain {name} has no head")
        head = lines[0]
        m = _HEAD.match(head)
        if m is not None:
            if m.group(1) == hook:
                bases.append((name, "deny" if m.group(3) == "drop" else "unjudged"))
        elif head != "regular chain":
            return Program({}, None, frozenset(), error=f"chain {name}: {head}")
        chains[name] = [_nft_rule(line, sets, names) for line in lines[1:]]
    if not bases:
        return Program(chains, None, frozenset())
    if len(bases) > 1:
        return Program(chains, None, frozenset(),
                       error=f"chains {', '.join(n for n, _ in bases)} all hook {hook}")
    (entry, policy), = bases
    return Program(chains, entry, frozenset({entry}), policy)


# -- the entry point ---------------------------------------------------------------------------

class Reading:
    """A backend's listing, parsed once for any number of connections: a family's chains once
    per path, each set once (agree.py asks hundreds of connections)."""

    def __init__(self, backend: str, state: State) -> None:
        self.backend, self.state = backend, state
        self._programs: dict[tuple[int, str], Program] = {}
        self._nft_sets = _NftSets(state)
        self._ipt_sets = {family: _IptSets(state, family) for family in (4, 6)}

    def program(self, family: int, path: str) -> Program:
        if self.backend == "iptables":
            key = (family, "input" if path == "input" else "forward")
            if key not in self._programs:
                self._programs[key] = iptables_program(self.state, family, path,
                                                       self._ipt_sets[family])
        elif self.backend == "nftables":
            key = (0, "input" if path == "input" else "forward")
            if key not in self._programs:
                self._programs[key] = nftables_program(self.state, key[1], self._nft_sets)
        else:
            return Program({}, None, frozenset(), error=f"backend {self.backend}")
        return self._programs[key]

    def verdict(self, conn: Connection) -> KernelVerdict:
        return run(self.program(conn.family, conn.path), conn)


def kernel_verdict(backend: str, state: State, conn: Connection) -> KernelVerdict:
    """What fwsync's objects, as the backend's read() lists them, do to this connection."""
    return Reading(backend, state).verdict(conn)
