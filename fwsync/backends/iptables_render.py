"""Ruleset → iptables objects, in exactly the text `iptables-save` / `ipset save` print. Pure.

Chains fwsync owns, per family (iptables and ip6tables):

    FORWARD → DOCKER-USER → FWSYNC-FORWARD   picks out new connections from outside into Docker
    FORWARD → FWSYNC-FORWARD                 (both: see JUDGED_LABEL)
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
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from fwsync.backends.base import BackendError
from fwsync.core.audit import would
from fwsync.core.kernel_text import checked_iface
from fwsync.core.kernel_text import comment_text as kernel_comment
from fwsync.core.logging_rules import (
    IN_ALL_BURST,
    IN_ALL_PER_SECOND,
    LIMIT_REFUSED,
    LOG_GROUP,
    PER_SOURCE_BURST,
    PER_SOURCE_PER_MINUTE,
)
from fwsync.core.logging_rules import prefix as log_prefix
from fwsync.core.merge import merge_runs
from fwsync.core.ruleset import LIMIT, AddrSet, Family, KernelRule, Match, RateLimit, Ruleset
from fwsync.core.tallies import Published, tallies
from fwsync.rules.addresses import kernel_text

FORWARD_CHAIN = "FWSYNC-FORWARD"
INBOUND_CHAIN = "FWSYNC-INBOUND"
DIRECT_CHAIN = "FWSYNC-DIRECT"
INPUT_CHAIN = "FWSYNC-INPUT"
# Where a `limit` rule whose refusals are logged sends what it refuses over its rate: the log
# line, then the rule's reject. A chain, because the rate is asked once (asking hashlimit
# again, for a log line, would take from the bucket a second time). Made only when a rule
# needs it.
LIMITED_CHAIN = "FWSYNC-LIMITED"
# Where iptables has no `meta oifkind`: the names Docker gives its own bridges, to judge a new
# non-DNATed connection routed into one made after `apply` (this judges, it never exempts).
DOCKER_BRIDGE_PATTERNS = ("docker0", "br-+", "docker_gwbridge")
OWN_CHAINS = (FORWARD_CHAIN, INBOUND_CHAIN, DIRECT_CHAIN, INPUT_CHAIN, LIMITED_CHAIN)
OPTIONAL_CHAINS = (LIMITED_CHAIN,)  # rendered only when used: deleted when no longer wanted
# Where fwsync's INPUT-path chain hangs: first in INPUT, before ufw's chains (ufw appends its
# jumps and, on reload, deletes only its own), so that fwsync's deny is seen first. Its allow
# is RETURN: the host's own INPUT rules (ufw) still decide after it, as Docker's chains do on
# the FORWARD path.
INPUT_ENTRY = "INPUT"
SET_PREFIX = "fws"
# A limit's hash buckets: the kernel's own default on a host with over 1 GiB of memory.
HASHLIMIT_BUCKETS = 8192
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


# fwsync jumps to FWSYNC-FORWARD from DOCKER-USER and from FORWARD itself. Docker before 28
# deletes FORWARD's jump to DOCKER-USER and inserts it again at every network it creates (two
# iptables runs): a connection arriving in between would pass no rule of fwsync's. With both
# jumps, every packet passes fwsync's chain once or twice; the second time must not count (a
# `limit` would count a connection twice). A conntrack label says "judged": set on the first
# pass, and looked at only while the connection's entry is unconfirmed, i.e. during the
# traversal of its first packet (the kernel confirms it after the last hook). A later packet
# still in state NEW (a SYN sent again, one-way UDP) is judged again, as before. Labels are set
# by host rules and conntrack tools only, never by a packet; an entry made while no rule used
# labels has none, and then the label never matches: judged twice, not skipped.
JUDGED_LABEL = 100


# A define's name as it fits into an ipset name: fws4-DISPLAY-123abc is 31 bytes at most, and
# its temporary name (temp_set_name) one more, so DISPLAY is 18. A longer name keeps its first
# 5 characters and 12 hex digits (48 bits) of its digest: two of a thousand names share them
# with a chance of about 2e-9 (4 digits, before: 1 in 5 with 300 names sharing a prefix). And
# were they ever shared, render_family refuses: one define's rule never matches another's set.
_DISPLAY = 18
_DIGEST = 12


def set_display(name: str) -> str:
    """The define's name as it fits into an ipset name (31 bytes at most); a `~` in it (no
    define's name has one) says it is shortened. Internal names (core/merge) are short."""
    if len(name) <= _DISPLAY:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST]
    return f"{name[:_DISPLAY - _DIGEST - 1]}~{digest}"


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
    text = kernel_text(ipaddress.ip_network(cidr))
    return text.removesuffix("/32") if ":" not in text else text.removesuffix("/128")


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
    return kernel_text(ipaddress.ip_network(cidr))


@dataclass(frozen=True)
class RenderContext:
    family: Family
    set_names: dict[str, str]  # display name → kernel set name
    limit: RateLimit = LIMIT
    log_tag: str = ""  # Ruleset.log_tag: every log line's prefix names the policy


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


def _log_line(match: str, comment: str | None, ctx: RenderContext, index: int | None,
              action: str, chain: str = INBOUND_CHAIN) -> str:
    """A logged decision's line before it, with the same match: its new connections go to
    fwsync's NFLOG group (core/logging_rules), rate-limited per source (a /64 for IPv6, in one
    table for all of fwsync's log lines) and in all (per rule). As iptables-save lists it."""
    per_source = (f"-m hashlimit --hashlimit-upto {PER_SOURCE_PER_MINUTE}/min --hashlimit-burst "
                  f"{PER_SOURCE_BURST} --hashlimit-mode srcip --hashlimit-name fwsync-log")
    if ctx.family == 6 and ctx.limit.ipv6_prefix != 128:
        per_source += f" --hashlimit-srcmask {ctx.limit.ipv6_prefix}"
    in_all = f"-m limit --limit {IN_ALL_PER_SECOND}/sec --limit-burst {IN_ALL_BURST}"
    target = (f'-j NFLOG --nflog-prefix "{log_prefix(ctx.log_tag, index, action)}" '
              f"--nflog-group {LOG_GROUP}")
    return _line(chain, " ".join(p for p in (match, per_source, in_all) if p), comment, target)


def _rule_lines(rule: KernelRule, ctx: RenderContext, comment: str | None = None
                ) -> Iterator[str]:
    match = _match_text(rule.match, ctx)
    comment = comment or f"{rule.origin.short} {rule.origin.text}"
    chain = INBOUND_CHAIN
    if rule.audit:
        yield from _audit_lines(rule, match, comment, ctx)
        return
    if rule.log and rule.action != "limit":
        yield _log_line(match, comment, ctx, rule.index, rule.action)
    if rule.action == "allow":
        yield _line(chain, match, comment, "-j RETURN")
    elif rule.action == "deny":
        yield _line(chain, match, comment, "-j DROP")
    elif rule.action == "reject":
        yield _line(chain, match, comment, _reject(ctx.family, rule.match.proto))
    else:  # limit: the core's RateLimit, a token bucket per source (hashlimit)
        over = _over(ctx, f"fwsync-{rule.index}")
        refuse = f"-j {LIMITED_CHAIN}" if rule.log_refused else _reject(ctx.family,
                                                                           rule.match.proto)
        yield _line(chain, f"{match} {over}".strip(), comment, refuse)
        if rule.log:  # under the rate: what it lets in
            yield _log_line(match, comment, ctx, rule.index, "allow")
        yield _line(chain, match, comment, "-j RETURN")


def _over(ctx: RenderContext, name: str) -> str:
    """The core's RateLimit as a hashlimit match: over the rate (a token bucket per source)."""
    # htable-max is the capacity (the kernel raises a max below the bucket count to it,
    # so the buckets are at most as many); a full table hot-drops a new source's packet.
    # The kernel finds a table by its name and keeps the size, max and expiry it was made
    # with while a rule uses it: a changed capacity needs a new name (seen in the kernel
    # test, which therefore applies its small capacity to a fresh lab only).
    lim = ctx.limit
    over = (f"-m hashlimit --hashlimit-above {lim.per_minute}/min --hashlimit-burst "
            f"{lim.burst} --hashlimit-mode srcip --hashlimit-name {name} "
            f"--hashlimit-htable-size {min(lim.capacity, HASHLIMIT_BUCKETS)} "
            f"--hashlimit-htable-max {lim.capacity} "
            f"--hashlimit-htable-expire {lim.forget_after * 1000}")
    if ctx.family == 6 and lim.ipv6_prefix != 128:
        over += f" --hashlimit-srcmask {lim.ipv6_prefix}"  # one bucket per /64
    return over


def _audit_lines(rule: KernelRule, match: str, comment: str, ctx: RenderContext
                 ) -> Iterator[str]:
    """An audited rule (core/audit): a line with no target counts what it would refuse (its
    packets, as a decision's), a log line logs it; neither decides, the next rule does. An
    audited limit asks its rate on the count line, and on a twin table of the same bounds on
    the log line (each line sees the same connections; asking one table twice would take two
    tokens from each source's bucket)."""
    if rule.action == "limit":
        yield _line(INBOUND_CHAIN, f"{match} {_over(ctx, f'fwsync-{rule.index}')}".strip(),
                    comment, "")
        twin = f"{match} {_over(ctx, f'fwsync-{rule.index}a')}".strip()
        yield _log_line(twin, comment, ctx, rule.index, would(rule.action))
        return
    yield _line(INBOUND_CHAIN, match, comment, "")
    yield _log_line(match, comment, ctx, rule.index, would(rule.action))


def _limited_lines(ctx: RenderContext, rules: Iterable[tuple[KernelRule, str]]
                   ) -> Iterator[str]:
    """FWSYNC-LIMITED: per `limit` rule whose refusals are logged, in the policy's order, its
    log line and its reject, with the rule's own match. A connection comes here only from its
    rule's over-the-rate line; it matches no earlier rule's match here, since an earlier limit
    rule it matched would have decided it (refused here, or let in). The last line refuses
    whatever else comes: fail closed, never back to be let in."""
    for rule, comment in rules:
        if rule.action == "limit" and rule.log_refused:
            match = _match_text(rule.match, ctx)
            comment = comment or f"{rule.origin.short} {rule.origin.text}"
            yield _log_line(match, comment, ctx, rule.index, LIMIT_REFUSED, LIMITED_CHAIN)
            yield _line(LIMITED_CHAIN, match, comment, _reject(ctx.family, rule.match.proto))
    yield _line(LIMITED_CHAIN, "", "fwsync limit refused", _reject(ctx.family, None))


def _forward_lines(ruleset: Ruleset, family: Family) -> Iterator[str]:
    # Established/related packets are Docker's business: only the first packet is judged.
    yield _line(FORWARD_CHAIN, "-m conntrack ! --ctstate NEW", None, "-j RETURN")
    label = f'-m connlabel --label "{JUDGED_LABEL}"'
    yield _line(FORWARD_CHAIN, f"-m conntrack ! --ctstatus CONFIRMED {label}",
                "fwsync judged it already", "-j RETURN")
    yield _line(FORWARD_CHAIN, f"{label} --set", None, "")
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


def _tally_lines(match: Match, comment: str, ctx: RenderContext, published: Iterable[Published]
                 ) -> Iterator[str]:
    """The decision's per-port counts (core/tallies): its match on one published port, no
    target, before it."""
    for narrowed, name in tallies(match, published):
        yield _line(INBOUND_CHAIN, _match_text(narrowed, ctx), f"{name} {comment}", "")


def _inbound_lines(ruleset: Ruleset, ctx: RenderContext, rules: Iterable[tuple[KernelRule, str]],
                   merged: Collection[int] = ()) -> Iterator[str]:
    """`merged`: the positions in `rules` of merged runs (no per-port counts)."""
    if ruleset.protect_direct_routing:
        # Not DNATed means not through a published port: straight to a container's own address
        # (dropped in FWSYNC-DIRECT), or to this host's docker-proxy (the INPUT path).
        yield _line(INBOUND_CHAIN, "-m conntrack ! --ctstate DNAT",
                    "fwsync protect direct-routing", f"-j {DIRECT_CHAIN}")
    if ruleset.protect_localhost_publish:
        loopback = "127.0.0.0/8" if ctx.family == 4 else "::1"
        yield _line(INBOUND_CHAIN, f"-m conntrack --ctorigdst {loopback}",
                    "fwsync protect localhost-publish", "-j DROP")
    for n, (rule, comment) in enumerate(rules):
        if n not in merged:
            yield from _tally_lines(rule.match, comment or f"{rule.origin.short} "
                                    f"{rule.origin.text}", ctx, ruleset.published)
        yield from _rule_lines(rule, ctx, comment)
    origin = ruleset.default_origin
    where = f"{origin.short} " if origin else ""
    yield from _tally_lines(Match(family=ctx.family), f"{where}default "
                            f"{ruleset.audit_default or ruleset.default}", ctx, ruleset.published)
    if ruleset.audit_default is not None:
        # Audited (core/audit): counted and logged as what it would do; then the enforced
        # default below (allow) lets the connection on.
        audited = f"{where}default {ruleset.audit_default}"
        yield _line(INBOUND_CHAIN, "", audited, "")
        yield _log_line("", audited, ctx, None, would(ruleset.audit_default))
    comment = f"{where}default {ruleset.default}"
    if ruleset.log_default:
        yield _log_line("", comment, ctx, None, ruleset.default)
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
    (FORWARD first; DOCKER-USER too where Docker made it)."""
    if isinstance(entries, str):
        entries = (entries,)
    objects: dict[str, tuple[str, ...]] = {}
    set_names: dict[str, str] = {}
    merged = merge_runs(ruleset, (family,))
    named: dict[str, str] = {}  # display → the set's own name
    for aset in merged.ruleset.sets_for(family):  # the defines', then the merged rules'
        display = set_display(aset.name)
        if named.setdefault(display, aset.name) != aset.name:
            raise BackendError(
                f"the sets {named[display]!r} and {aset.name!r} would share the ipset name "
                f"{display!r}: rename one of them; nothing was changed")
        elements = set_elements(aset)
        objects[set_key(family, display)] = elements
        set_names[display] = set_kernel_name(family, display, elements)
    ctx = RenderContext(family=family, set_names=set_names, limit=ruleset.limit,
                        log_tag=ruleset.log_tag)
    rules = [(rule, merged.comment(n)) for n, rule in enumerate(merged.ruleset.rules)]
    objects[chain_key(family, FORWARD_CHAIN)] = tuple(_forward_lines(ruleset, family))
    objects[chain_key(family, INBOUND_CHAIN)] = tuple(_inbound_lines(ruleset, ctx, rules,
                                                                     merged.merged))
    objects[chain_key(family, DIRECT_CHAIN)] = tuple(_direct_lines(ruleset, family))
    objects[chain_key(family, INPUT_CHAIN)] = tuple(_input_lines(ruleset, family))
    if any(rule.log_refused for rule, _ in rules):
        objects[chain_key(family, LIMITED_CHAIN)] = tuple(_limited_lines(ctx, rules))
    objects[jump_key(family)] = (*(jump_line(c, 1) for c in entries), input_jump_line())
    return objects


