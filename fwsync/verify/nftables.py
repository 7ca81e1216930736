"""The nftables backend's lines for `table inet fwsync` → a Program (walk.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from fwsync.backends.nft_sets import LIMIT_METER_BASE
from fwsync.core.diff import State
from fwsync.core.logging_rules import LOG_SET_BASE
from fwsync.verify.connection import Connection
from fwsync.verify.walk import (
    CT_STATES,
    AddrSet,
    Intervals,
    Program,
    Rule,
    Test,
    Tri,
    Unreadable,
    family_test,
    iface_match,
    iface_test,
    kind_test,
    negated,
    net_test,
    port_span,
    port_test,
    proto_test,
    span,
    state_test,
    steps_aside,
)

# The names fwsync gives its table (the backend's, written out: see iptables.py's note).
NFT_PREFIX = "inet fwsync "
NFT_TABLE_KEY = "inet fwsync table"
NFT_DORMANT = "flags dormant: the kernel runs none of the table's rules"

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
            self.parsed[key] = Intervals.of(port_span(e, "-") for e in self.state[key])
        got = self.parsed[key]
        assert isinstance(got, Intervals)
        return got

    def meter(self, name: str, family: int) -> None:
        _key, kind = self.key(name)
        if kind != f"ipv{family}_addr, per-source limit":
            raise Unreadable(f"set @{name} holds {kind}")

    def filled(self, name: str) -> bool:
        """Whether traffic fills the set (a limit's: no elements are listed), not the rules."""
        _key, kind = self.key(name)
        return kind.endswith(", per-source limit")


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


def _saddr_key(words: _Words, proto: str) -> tuple[int, str]:
    """(family, the key's name) of `ip saddr` / `ip6 saddr & MASK` (proto already read): a
    limit's sets are keyed by the source, an IPv6 one by its network (`& ffff:ffff:ffff:ffff::`:
    the source's /64). The name says the prefix, so that a lookup is matched with the update
    of the same key."""
    if proto not in ("ip", "ip6") or words.next() != "saddr":
        raise Unreadable(f"a set keyed by {proto} other than saddr")
    family = 4 if proto == "ip" else 6
    bits = 32 if family == 4 else 128
    prefix = bits
    if words.peek() == "&":
        words.next()
        mask_text = words.next()
        mask_family, mask, _ = span(mask_text)
        prefix = bits - (((1 << bits) - 1) ^ mask).bit_length()
        if mask_family != family or mask != ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1):
            raise Unreadable(f"mask {mask_text} is not a prefix")
    return family, f"{proto} saddr/{prefix}"


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
    f, _lo, _hi = span(v)
    if f != family:
        raise Unreadable(f"{v} is not an IPv{family} address")
    return net_test(v, get)


def _port_value(v: str, sets: _NftSets, get: Callable[[Connection], int | None]) -> Test:
    if v.startswith("@"):
        ports = sets.ports(v[1:])
        return lambda c: None if (p := get(c)) is None else p in ports
    lo, hi = port_span(v, "-")
    return port_test(lo, hi, get)


def _socket_cgroup_test(cgroup: tuple[int, str]) -> Test:
    def test(conn: Connection) -> Tri:
        if conn.path != "input":
            return False  # routed: no local socket
        return None if conn.socket_cgroup is None else conn.socket_cgroup == cgroup
    return test


_VERDICT_WORDS = {"accept", "drop", "reject", "return", "jump", "goto", "queue"}


def _log_only(words: list[str]) -> bool:
    """A rule that only logs (core/logging_rules): no verdict, and the only sets it updates are
    the log's own per-source buckets, or a limit's meters (an audited limit, core/audit, asks
    its rate): sets nothing looks up. It cannot change what happens to a connection."""
    if "log" not in words or _VERDICT_WORDS & set(words):
        return False
    updated = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "update"]
    return all(name.startswith(("@" + LOG_SET_BASE, "@" + LIMIT_METER_BASE)) for name in updated)


def _nft_parse(line: str, sets: _NftSets, chains: set[str]) -> Rule:
    plain = _nft_comment(line).split()
    if _log_only(plain):
        return Rule(line)
    words = _Words(plain)
    tests: list[Test] = []
    kinds: list[str] = []
    target: tuple[str, str] = ("none", "")
    limit = False
    admits: str | None = None
    looks_in: tuple[str, bool] | None = None

    def add(neg: bool, alternatives: list[Test], kind: str = "other") -> None:
        test = alternatives[0] if len(alternatives) == 1 else _any_of(alternatives)
        tests.append(negated(test) if neg else test)
        kinds.append(kind)

    def family_only(family: int) -> None:
        # `ip ...` / `ct original ip ...` carry nftables' dependency on the family.
        tests.append(family_test(family))
        kinds.append("family")

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
                add(neg, [family_test(4 if v == "ipv4" else 6) for v in values])
            elif key == "l4proto":
                add(neg, [proto_test(v) for v in values])
            elif key in ("iifname", "oifname"):
                matches = [iface_match(v.strip('"'), "*") for v in values]
                arriving = key == "iifname"
                add(neg, [iface_test(m, arriving) for m in matches],
                    "iif" if arriving and not neg else "other")
            elif key == "oifkind":
                # The leaving interface's kind (the catch-all for bridges made after apply,
                # whatever their names): Connection.oifkind.
                add(neg, [kind_test(v.strip('"')) for v in values])
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
                if not {v.upper() for v in values} <= CT_STATES:
                    raise Unreadable(f"ct state {values}")
                add(neg, [state_test(frozenset({v.upper()})) for v in values],
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
        elif w in ("ip", "ip6") and words.peek() == "saddr":
            family, key = _saddr_key(words, w)
            family_only(family)
            neg, values = words.value()
            filled = values[0][1:] if len(values) == 1 and values[0].startswith("@") \
                and sets.filled(values[0][1:]) else None
            if filled is not None:
                # A limit's set of sources: what it holds is the walk's (walk.py, _walk).
                sets.meter(filled, family)
                if looks_in is not None:
                    raise Unreadable("two lookups in sets that traffic fills")
                looks_in = (f"{filled} {key}", neg)
            elif key != f"{w} saddr/{32 if family == 4 else 128}":
                raise Unreadable(f"a masked source looked up in {' '.join(values)}")
            else:
                add(neg, [_addr_value(v, family, sets, lambda c: c.saddr) for v in values],
                    "other" if neg else "saddr")
        elif w in ("ip", "ip6"):
            family = 4 if w == "ip" else 6
            which = words.next()
            if which != "daddr":
                raise Unreadable(f"{w} {which}")
            family_only(family)
            neg, values = words.value()
            add(neg, [_addr_value(v, family, sets, lambda c: c.packet_daddr) for v in values])
        elif w == "socket":
            # The input path's catch-all: a socket of a process in this cgroup (docker-proxy's,
            # in dockerd's). nft lists a cgroup that is gone by its number: matches nothing
            # fwsync can name, so unreadable.
            if [words.next(), words.next()] != ["cgroupv2", "level"]:
                raise Unreadable("socket other than cgroupv2 level")
            level, where = int(words.next()), words.next()
            if len(where) < 2 or not where.startswith('"') or not where.endswith('"'):
                raise Unreadable(f"socket cgroupv2 {where}: a cgroup that no longer exists")
            add(False, [_socket_cgroup_test((level, where[1:-1]))])
        elif w == "fib":
            if [words.next(), words.next()] != ["daddr", "type"]:
                raise Unreadable("fib other than daddr type")
            neg, values = words.value()
            if values != ["local"]:
                raise Unreadable(f"fib daddr type {values}")
            add(neg, [lambda c: c.local])
        elif w == "update":
            meter = words.next()
            if not meter.startswith("@") or words.next() != "{" or admits or limit:
                raise Unreadable("update")
            family, key = _saddr_key(words, words.next())
            sets.meter(meter[1:], family)
            if words.peek() == "}":
                # No statement on the element: the source taken into the set, if it has room.
                words.next()
                family_only(family)
                admits = f"{meter[1:]} {key}"
                continue
            spec = [words.next() for _ in range(6)]
            if spec[:3] != ["limit", "rate", "over"] or spec[4] != "burst" \
                    or not spec[5].isdigit() or words.next() != "}":
                raise Unreadable(f"meter statement {' '.join(spec)}")
            family_only(family)
            limit = True
        elif w == "counter":
            continue  # counts, decides nothing
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
    return Rule(line, tuple(tests), target, limit, steps_aside(kinds), admits=admits,
                looks_in=looks_in)


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
