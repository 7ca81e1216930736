"""Ruleset → iptables objects, in exactly the text `iptables-save` / `ipset save` print. Pure.

Chains fwsync owns, per family (iptables and ip6tables):

    FORWARD → DOCKER-USER → FWSYNC-FORWARD   picks out new connections from outside into Docker
                                             (into a Docker bridge, or DNATed to anywhere)
                             FWSYNC-INBOUND  the protections, the user's rules in order, the default
                             FWSYNC-DIRECT   what was not DNATed: to the host (docker-proxy) and
                                             into routed networks back to the rules, else dropped
    INPUT → FWSYNC-INPUT                     new connections to the ports docker-proxy listens on
                                             (published bindings), judged by FWSYNC-INBOUND

`allow` is RETURN, not ACCEPT: the connection then goes on through the rest of DOCKER-USER and
Docker's own chains, so fwsync only ever narrows what Docker allows and other people's rules in
DOCKER-USER keep working.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from fwsync.core.build import split_cidrs
from fwsync.core.kernel_text import checked_iface
from fwsync.core.kernel_text import comment_text as kernel_comment
from fwsync.core.ruleset import LIMIT, AddrSet, Family, KernelRule, Match, RateLimit, Ruleset

FORWARD_CHAIN = "FWSYNC-FORWARD"
INBOUND_CHAIN = "FWSYNC-INBOUND"
DIRECT_CHAIN = "FWSYNC-DIRECT"
INPUT_CHAIN = "FWSYNC-INPUT"
# Where iptables has no `meta oifkind`: the names Docker gives its own bridges, to judge a new
# non-DNATed connection routed into one made after `apply` (this judges, it never exempts).
DOCKER_BRIDGE_PATTERNS = ("docker0", "br-+", "docker_gwbridge")
OWN_CHAINS = (FORWARD_CHAIN, INBOUND_CHAIN, DIRECT_CHAIN, INPUT_CHAIN)
# Where fwsync's INPUT-path chain hangs: first in INPUT, before ufw's chains (ufw appends its
# jumps and, on reload, deletes only its own), so that fwsync's deny is seen first. Its allow
# is RETURN: the host's own INPUT rules (ufw) still decide after it, as Docker's chains do on
# the FORWARD path.
INPUT_ENTRY = "INPUT"
SET_PREFIX = "fws"
_SET_NAME = re.compile(r"^fws([46])-(.+)-([0-9a-f]{6})$")
_COMMENT_MAX = 255
_UNQUOTED = re.compile(r"^[A-Za-z0-9_-]+$")


def chain_key(family: Family, chain: str) -> str:
    return f"ipv{family} chain {chain}"


def jump_key(family: Family) -> str:
    return f"ipv{family} jump"


def set_key(family: Family, display: str) -> str:
    return f"ipv{family} set {display}"


def jump_line(chain: str, position: int, target: str = FORWARD_CHAIN) -> str:
    return f"{chain} rule {position} -j {target}"


def input_jump_line(position: int = 1) -> str:
    return jump_line(INPUT_ENTRY, position, INPUT_CHAIN)


# Part of the jump object when fwsync hangs off DOCKER-USER alone: that chain is only reached
# while FORWARD sends every packet there first. A read-back without it is drift (fail-open),
# and fwsync then jumps from FORWARD as well.
REACH_LINE = "FORWARD rule 1 -j DOCKER-USER"


def _short(text: str, size: int) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text if len(text) <= size else f"{text[: size - 5]}~{digest[:4]}"


def set_display(name: str) -> str:
    """The define's name as it fits into an ipset name (31 bytes at most)."""
    return _short(name, 18)


def set_kernel_name(family: Family, display: str, elements: tuple[str, ...]) -> str:
    """Content-addressed, so new contents get a new set and rules switch to it in one commit."""
    digest = hashlib.sha256(f"{family}|{display}|{' '.join(elements)}".encode()).hexdigest()
    return f"{SET_PREFIX}{family}-{display}-{digest[:6]}"


# A set is filled under a temporary name and given its content name by `ipset rename` (or, when
# a set of that name exists with other contents, `ipset swap`), each atomic: so a set under its
# content name is always complete. An apply killed while filling leaves only a temporary set,
# which the next apply destroys; before, a half-filled set under its content name was adopted
# as complete. `~` cannot start a define's name, so a temporary name is never a real one.
TEMP_MARK = "~"


def temp_set_name(final: str) -> str:
    """Where the set `final` is filled (31 bytes at most, like every ipset name)."""
    parsed = parse_set_name(final)
    assert parsed is not None, final
    family, display = parsed
    return f"{SET_PREFIX}{family}-{TEMP_MARK}{display}-{final[-6:]}"


def is_temp_set(name: str) -> bool:
    parsed = parse_set_name(name)
    return parsed is not None and parsed[1].startswith(TEMP_MARK)


def parse_set_name(name: str) -> tuple[Family, str] | None:
    m = _SET_NAME.match(name)
    if m is None:
        return None
    family: Family = 6 if m.group(1) == "6" else 4
    return family, m.group(2)


def ipset_element(cidr: str) -> str:
    """How `ipset save` prints an element: a whole host loses its prefix length."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def set_elements(aset: AddrSet) -> tuple[str, ...]:
    # The builder's elements are canonical already (`str` of a network): split, not parsed,
    # since a set may hold 100k of them.
    full = "/32" if aset.family == 4 else "/128"
    return tuple(sorted(e.removesuffix(full) for e in aset.elements))


def quote(value: str) -> str:
    """iptables-save's quoting (xtables_save_string), so rendered text compares equal."""
    return value if _UNQUOTED.match(value) else f'"{value}"'


def comment_text(text: str) -> str:
    # Quotes and backslashes would need escaping that the two iptables variants treat differently.
    return kernel_comment(text, _COMMENT_MAX, drop="\"'\\")


def _addr(cidr: str) -> str:
    """--ctorigdst prints a whole host without its prefix length."""
    return ipset_element(cidr)


def _cidr(cidr: str) -> str:
    """-s prints a prefix length always."""
    return str(ipaddress.ip_network(cidr))


@dataclass(frozen=True)
class RenderContext:
    family: Family
    set_names: dict[str, str]  # display name → kernel set name
    limit: RateLimit = LIMIT


def _match_text(m: Match, ctx: RenderContext) -> str:
    parts: list[str] = []
    if m.saddr is not None:
        parts.append(f"-s {_cidr(m.saddr)}")
    if m.dnat_daddr is not None:  # after Docker's DNAT: the container the rule was made for
        parts.append(f"-d {_cidr(m.dnat_daddr)}")
    if m.iface is not None:
        parts.append(f"-i {checked_iface(m.iface)}")
    if m.proto is not None:
        parts.append(f"-p {m.proto}")
    if m.sset is not None:
        parts.append(f"-m set --match-set {ctx.set_names[set_display(m.sset)]} src")
    ct = ["-m conntrack"]
    if m.not_dnat:  # iptables-save lists --ctstate first
        ct.append("! --ctstate DNAT")
    if m.daddr is not None:
        ct.append(f"--ctorigdst {_addr(m.daddr)}")
    if m.sport is not None:
        ct.append(f"--ctorigsrcport {m.sport}")
    if m.dport is not None:
        ct.append(f"--ctorigdstport {m.dport}")
    if len(ct) > 1:
        parts.append(" ".join(ct))
    return " ".join(parts)


def _reject(family: Family, proto: str | None) -> str:
    if proto == "tcp":
        return "-j REJECT --reject-with tcp-reset"
    return "-j REJECT --reject-with " + (
        "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    )


def _line(chain: str, match: str, comment: str | None, target: str) -> str:
    parts = [f"-A {chain}"]
    if match:
        parts.append(match)
    if comment:
        parts.append(f"-m comment --comment {quote(comment_text(comment))}")
    if target:
        parts.append(target)
    return " ".join(parts)


def _rule_lines(rule: KernelRule, ctx: RenderContext, comment: str | None = None
                ) -> Iterator[str]:
    match = _match_text(rule.match, ctx)
    comment = comment or f"{rule.origin.short} {rule.origin.text}"
    chain = INBOUND_CHAIN
    if rule.action == "allow":
        yield _line(chain, match, comment, "-j RETURN")
    elif rule.action == "deny":
        yield _line(chain, match, comment, "-j DROP")
    elif rule.action == "reject":
        yield _line(chain, match, comment, _reject(ctx.family, rule.match.proto))
    else:  # limit: the core's RateLimit, a token bucket per source (hashlimit)
        lim = ctx.limit
        over = (f"-m hashlimit --hashlimit-above {lim.per_minute}/min --hashlimit-burst "
                f"{lim.burst} --hashlimit-mode srcip --hashlimit-name fwsync-{rule.index} "
                f"--hashlimit-htable-expire {lim.forget_after * 1000}")
        yield _line(chain, f"{match} {over}".strip(), comment,
                    _reject(ctx.family, rule.match.proto))
        yield _line(chain, match, comment, "-j RETURN")


@dataclass
class _Sources:
    """Rules that differ only in their source address, within a run of one verdict: one
    iptables rule with an ipset of those sources (merged_sets names it)."""

    match: Match  # without saddr
    rules: list[KernelRule]
    saddrs: list[str]
    display: str = ""


def _verdict(rule: KernelRule) -> tuple[str, str | None]:
    return rule.action, (rule.match.proto if rule.action == "reject" else None)  # reset or icmp


def _merged(rules: Iterable[KernelRule]) -> Iterator[KernelRule | _Sources]:
    """Within a run of neighbouring rules with one verdict, order does not matter (whichever
    matches, the verdict is the same), so rules that differ only in their source address
    become one rule matching an ipset of those sources, as the nftables backend does: an
    allowlist written as 10k rules is one set lookup instead of a walk through 20k rules (0.15
    of the no-firewall connection rate, docs/benchmarks.md). A rule with another verdict ends
    the run, so `allow A, deny B, allow C` keeps its order; so does a limit (state per rule)."""
    run: list[KernelRule | _Sources] = []
    groups: dict[Match, _Sources] = {}
    verdict: tuple[str, str | None] | None = None
    for rule in rules:
        if rule.action == "limit" or _verdict(rule) != verdict:
            yield from _flush(run)
            run, groups = [], {}
            verdict = None if rule.action == "limit" else _verdict(rule)
        if rule.action == "limit" or rule.match.saddr is None:
            run.append(rule)  # any source, or a define's set: as it is
            continue
        key = replace(rule.match, saddr=None)
        group = groups.get(key)
        if group is None:
            groups[key] = group = _Sources(key, [], [])
            run.append(group)
        group.rules.append(rule)
        group.saddrs.append(rule.match.saddr)
    yield from _flush(run)


def _flush(run: list[KernelRule | _Sources]) -> Iterator[KernelRule | _Sources]:
    for item in run:
        yield item.rules[0] if isinstance(item, _Sources) and len(item.rules) == 1 else item


def merged_sets(items: Iterable[KernelRule | _Sources], family: Family
                ) -> list[tuple[_Sources, tuple[str, ...]]]:
    """The merged runs among `_merged`'s items, each named (`src.INDEX.K`: a `.` is in no
    define's name) and with its ipset's elements."""
    out = []
    taken: dict[int, int] = {}
    for item in items:
        if isinstance(item, _Sources):
            index = item.rules[0].index
            k = taken[index] = taken.get(index, -1) + 1
            item.display = f"src.{index}.{k}"
            full = "/32" if family == 4 else "/128"
            elements = tuple(sorted(e.removesuffix(full) for e in split_cidrs(item.saddrs,
                                                                              family)))
            out.append((item, elements))
    return out


def _run_lines(group: _Sources, ctx: RenderContext) -> Iterator[str]:
    first, last = group.rules[0], group.rules[-1]
    merged = KernelRule(match=replace(group.match, sset=group.display), action=first.action,
                        origin=first.origin, index=first.index)
    count = len({r.index for r in group.rules})
    comment = (f"{first.origin.short} to {last.origin.short}: {count} rules with one verdict, "
               "merged")
    yield from _rule_lines(merged, ctx, comment)


def _forward_lines(ruleset: Ruleset, family: Family) -> Iterator[str]:
    # Established/related packets are Docker's business: only the first packet is judged.
    yield _line(FORWARD_CHAIN, "-m conntrack ! --ctstate NEW", None, "-j RETURN")
    # From a Docker network: container egress or container-to-container, not governed.
    yield from _own_traffic(FORWARD_CHAIN, ruleset, family)
    # Goto, not jump: an allowed connection RETURNs from FWSYNC-INBOUND straight to DOCKER-USER,
    # instead of going on here and being judged a second time (a `limit` would count it twice).
    for bridge in ruleset.bridges:
        yield _line(FORWARD_CHAIN, f"-o {checked_iface(bridge.name)}", None,
                    f"-g {INBOUND_CHAIN}")
    for subnet in ruleset.bridge_subnets_for(family):
        # A bridge whose name can't be written literally: its subnet is the address after DNAT.
        yield _line(FORWARD_CHAIN, f"-d {_cidr(subnet)}", None, f"-g {INBOUND_CHAIN}")
    # Out of any other interface: a DNATed connection is one a port was published for, as all of
    # Docker's are (a bridge named after `apply`, Swarm's mesh). Judged without knowing the name.
    yield _line(FORWARD_CHAIN, "-m conntrack --ctstate DNAT", None, f"-g {INBOUND_CHAIN}")
    # Not DNATed, into a bridge made after `apply`: straight to a container's address. iptables
    # cannot match an interface's kind (nftables' `meta oifkind`): the names Docker gives its
    # own bridges stand in, which only ever judges more; a network made later with a bridge
    # name of the user's is not caught (status and doctor say so). The host's own bridges are
    # left to the host.
    for own in ruleset.host_bridges:
        yield _line(FORWARD_CHAIN, f"-o {checked_iface(own)}",
                    "fwsync host bridge", "-j RETURN")
    for pattern in DOCKER_BRIDGE_PATTERNS:
        yield _line(FORWARD_CHAIN, f"-o {pattern}", "fwsync Docker bridge names",
                    f"-g {INBOUND_CHAIN}")


def _inbound_lines(ruleset: Ruleset, ctx: RenderContext,
                   items: Iterable[KernelRule | _Sources]) -> Iterator[str]:
    if ruleset.protect_direct_routing:
        # Not DNATed means not through a published port: straight to a container's own address
        # (dropped in FWSYNC-DIRECT), or to this host's docker-proxy (the INPUT path).
        yield _line(INBOUND_CHAIN, "-m conntrack ! --ctstate DNAT",
                    "fwsync protect direct-routing", f"-j {DIRECT_CHAIN}")
    if ruleset.protect_localhost_publish:
        loopback = "127.0.0.0/8" if ctx.family == 4 else "::1"
        yield _line(INBOUND_CHAIN, f"-m conntrack --ctorigdst {loopback}",
                    "fwsync protect localhost-publish", "-j DROP")
    for item in items:
        if isinstance(item, KernelRule):
            yield from _rule_lines(item, ctx)
        else:
            yield from _run_lines(item, ctx)
    origin = ruleset.default_origin
    where = f"{origin.short} " if origin else ""
    comment = f"{where}default {ruleset.default}"
    if ruleset.default == "allow":
        yield _line(INBOUND_CHAIN, "", comment, "-j RETURN")
    elif ruleset.default == "deny":
        yield _line(INBOUND_CHAIN, "", comment, "-j DROP")
    else:
        yield _line(INBOUND_CHAIN, "-p tcp", comment, _reject(ctx.family, "tcp"))
        yield _line(INBOUND_CHAIN, "", comment, _reject(ctx.family, None))


def _direct_lines(ruleset: Ruleset, family: Family) -> Iterator[str]:
    if not ruleset.protect_direct_routing:
        return
    # To this host, not routed: a port docker-proxy listens on, reached from FWSYNC-INPUT (on
    # the FORWARD path the destination is never local).
    yield _line(DIRECT_CHAIN, "-m addrtype --dst-type LOCAL",
                "fwsync docker-proxy: the rules decide", "-j RETURN")
    for ok in ruleset.direct_ok_for(family):
        yield _line(DIRECT_CHAIN, f"-d {_cidr(ok.subnet)} -o {checked_iface(ok.bridge)}",
                    f"fwsync {ok.label}: the rules decide", "-j RETURN")
    yield _line(DIRECT_CHAIN, "", "fwsync protect direct-routing", "-j DROP")


def _own_traffic(chain: str, ruleset: Ruleset, family: Family) -> Iterator[str]:
    """A trusted bridge's own traffic (core/bridges.py): from its network's subnets of this
    family, arriving on it. Anything else arriving on it, or on a bridge not trusted, goes on
    to be judged."""
    for bridge in ruleset.bridges:
        for subnet in bridge.subnets_for(family):
            yield _line(chain, f"-s {_cidr(subnet)} -i {checked_iface(bridge.name)}", None,
                        "-j RETURN")


def _input_lines(ruleset: Ruleset, family: Family) -> Iterator[str]:
    yield _line(INPUT_CHAIN, "-m conntrack ! --ctstate NEW", None, "-j RETURN")
    # The host itself and its containers: not governed, as on the FORWARD path.
    yield _line(INPUT_CHAIN, "-i lo", None, "-j RETURN")
    yield from _own_traffic(INPUT_CHAIN, ruleset, family)
    for port in ruleset.input_ports_for(family):
        m = port.match
        dst = f"-d {_cidr(m.daddr)} " if m.daddr is not None else ""
        assert m.proto is not None and m.dport is not None
        # goto: judged once, and an allow (RETURN) goes back to INPUT itself, on to ufw's rules.
        yield _line(INPUT_CHAIN, f"{dst}-p {m.proto} -m {m.proto} --dport {m.dport}",
                    f"fwsync docker-proxy {port.binding}", f"-g {INBOUND_CHAIN}")


def render_family(ruleset: Ruleset, family: Family, entries: str | tuple[str, ...]
                  ) -> dict[str, tuple[str, ...]]:
    """`entries`: the chains fwsync jumps from, in the order iptables-save lists them
    (FORWARD first): DOCKER-USER alone while FORWARD sends every packet there first."""
    if isinstance(entries, str):
        entries = (entries,)
    objects: dict[str, tuple[str, ...]] = {}
    set_names: dict[str, str] = {}
    for aset in ruleset.sets_for(family):
        display = set_display(aset.name)
        elements = set_elements(aset)
        objects[set_key(family, display)] = elements
        set_names[display] = set_kernel_name(family, display, elements)
    items = list(_merged(ruleset.for_family(family)))
    for group, elements in merged_sets(items, family):
        objects[set_key(family, group.display)] = elements
        set_names[group.display] = set_kernel_name(family, group.display, elements)
    ctx = RenderContext(family=family, set_names=set_names, limit=ruleset.limit)
    objects[chain_key(family, FORWARD_CHAIN)] = tuple(_forward_lines(ruleset, family))
    objects[chain_key(family, INBOUND_CHAIN)] = tuple(_inbound_lines(ruleset, ctx, items))
    objects[chain_key(family, DIRECT_CHAIN)] = tuple(_direct_lines(ruleset, family))
    objects[chain_key(family, INPUT_CHAIN)] = tuple(_input_lines(ruleset, family))
    objects[jump_key(family)] = tuple(jump_line(c, 1) for c in entries) + (
        (REACH_LINE,) if entries == ("DOCKER-USER",) else ()) + (input_jump_line(),)
    return objects


