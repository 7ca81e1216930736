"""Ruleset → the objects of fwsync's nftables table (chains, rules, the sets they use), as
libnftables JSON: what the rules mean, written as nftables rules. Pure.

One `table inet fwsync` holds everything, IPv4 and IPv6 together:

    chain forward   hook forward, priority -1 (before Docker's and iptables-nft's filter at 0):
                    only NEW connections from outside into a Docker bridge, or DNATed to
                    anywhere (a published port), go on to `inbound`
    chain input     hook input, priority -1 (before ufw's and iptables-nft's filter at 0):
                    only NEW connections to the ports docker-proxy listens on go to `inbound`
    chain inbound   the protections, the user's rules in order, the default
    chain direct    what was not DNATed: to the host (docker-proxy) and into routed networks
                    back to `inbound`, everything else dropped (protect direct-routing)
    chain proxy     from `input`, after the listed bindings: a new connection to a socket of
                    a process in dockerd's cgroup (docker-proxy's, published now or later) to
                    `inbound`. Written in nft's text syntax (nft_table.PROXY_CHAIN says why).

An nftables `accept` only ends this table's say: the packet still meets Docker's chains and
anyone else's. That is all `allow` needs (fwsync narrows, Docker still decides), while `deny`
(drop) and `reject` are final everywhere, and `limit` rejects what exceeds its rate and
accepts the rest. So every verdict that keeps a connection out is one the kernel makes final.

The other nftables modules are what this one is not: the table's name and priorities
(nft_table), its sets' names and parts (nft_sets), the transactions that write the objects
(nft_transactions), and the objects → lines printer both rendered and listed state go through
(nft_state; `render` here is the two together).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from fwsync.backends.nft_sets import (
    Parts,
    content_name,
    distinct_names,
    limit_seen_name,
    limit_set_name,
    log_set_name,
    port_set,
    ruleset_sets,
    set_name,
)
from fwsync.backends.nft_state import objects_state
from fwsync.backends.nft_table import (
    FAMILY,
    FORWARD_PRIORITY,
    INPUT_PRIORITY,
    LIMITED_CHAIN,
    PROXY_CHAIN,
    TABLE,
    TEXT_RULE,
    Batch,
    Expr,
    in_table,
)
from fwsync.core.audit import would
from fwsync.core.build import FAMILIES
from fwsync.core.kernel_text import cgroup_path_problem, checked_iface, comment_text
from fwsync.core.logging_rules import (
    IN_ALL_BURST,
    IN_ALL_PER_SECOND,
    LIMIT_REFUSED,
    LOG_GROUP,
    PER_SOURCE_BURST,
    PER_SOURCE_PER_MINUTE,
)
from fwsync.core.logging_rules import prefix as log_prefix
from fwsync.core.merge import MergedRules, internal_name, merge_runs
from fwsync.core.observed import ProxyCgroup
from fwsync.core.ruleset import Family, KernelRule, Match, RateLimit, Ruleset
from fwsync.core.tallies import tallies
from fwsync.rules.addresses import kernel_text
from fwsync.rules.model import PortRange

_COMMENT_MAX = 120  # nftables keeps at most 128 bytes of a rule comment


def _match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def _ct_orig(key: str) -> Expr:
    return {"ct": {"key": key, "dir": "original"}}


def _addr(cidr: str) -> Any:
    """An address as nftables lists it: a whole host as a plain string, else a prefix."""
    net = ipaddress.ip_network(cidr)
    addr = kernel_text(net).partition("/")[0]  # as nft lists it: ::ffff:a.b.c.d dotted
    if net.prefixlen == net.max_prefixlen:
        return addr
    return {"prefix": {"addr": addr, "len": net.prefixlen}}


def _iface(name: str) -> str:
    """fwsync's prefix `eth+` is nftables' `eth*`; every other character of a checked name
    means itself to nftables (no `*` or `\\` can be left in it)."""
    name = checked_iface(name)
    return name[:-1] + "*" if name.endswith("+") else name


def _saddr(family: Family) -> Expr:
    return {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": "saddr"}}


def _port(r: Any) -> Any:
    return r.low if r.low == r.high else {"range": [r.low, r.high]}


def _family_free(m: Match) -> bool:
    return m.saddr is None and m.sset is None and m.daddr is None and m.dnat_daddr is None


def match_exprs(m: Match, family_specific: bool) -> list[Expr]:
    exprs: list[Expr] = []
    if m.proto is not None:
        # l4proto first: ct original proto-dst has no type of its own without it.
        exprs.append(_match(_meta("l4proto"), m.proto))
    if m.dport is not None:
        exprs.append(_match(_ct_orig("proto-dst"), _port(m.dport)))
    if m.sport is not None:
        exprs.append(_match(_ct_orig("proto-src"), _port(m.sport)))
    if m.saddr is not None:
        exprs.append(_match(_saddr(m.family), _addr(m.saddr)))
    if m.sset is not None:
        exprs.append(_match(_saddr(m.family), "@" + set_name(m.sset, m.family)))
    if m.daddr is not None:
        key = "ip daddr" if m.family == 4 else "ip6 daddr"
        exprs.append(_match(_ct_orig(key), _addr(m.daddr)))
    if m.dnat_daddr is not None:
        # The destination now, after Docker's DNAT: the container the rule was made for.
        daddr = {"payload": {"protocol": "ip" if m.family == 4 else "ip6", "field": "daddr"}}
        exprs.append(_match(daddr, _addr(m.dnat_daddr)))
    if m.not_dnat:
        exprs.append(_match({"&": [{"ct": {"key": "status"}}, "dnat"]}, "dnat", "!="))
    if m.iface is not None:
        exprs.append(_match(_meta("iifname"), _iface(m.iface)))
    if family_specific and _family_free(m):
        exprs.insert(0, _match(_meta("nfproto"), "ipv4" if m.family == 4 else "ipv6"))
    return exprs


def _reject(proto: str | None) -> Expr:
    if proto == "tcp":
        return {"reject": {"type": "tcp reset"}}
    return {"reject": {"type": "icmpx", "expr": "port-unreachable"}}


_VERDICTS = ("accept", "drop", "reject", "return", "jump", "goto")



def _rule(chain: str, exprs: list[Expr], comment: str | None = None) -> dict[str, Any]:
    if chain == "inbound" and exprs and next(iter(exprs[-1])) in _VERDICTS:
        # Each decision counts the connections it decides (the chain sees a connection's first
        # packet only): `status` and the metrics read them (backends/rule_counts.py). Written
        # from zero here; apply carries a kept rule's counts over (nftables.py, _carried).
        exprs = [*exprs[:-1], {"counter": None}, exprs[-1]]
    rule: dict[str, Any] = {**in_table(), "chain": chain, "expr": exprs}
    if comment:
        rule["comment"] = comment_text(comment, _COMMENT_MAX)
    return {"rule": rule}


@dataclass
class _Spec:
    """One nftables rule to be: a match, and the ports it takes as a set."""

    match: Match  # dport is unset when dports says more than one
    dports: list[PortRange]
    rules: list[KernelRule]
    comment: str
    both_families: bool  # no address in it, and the rule is there in both families


def _specs(merged: MergedRules) -> Iterator[_Spec | tuple[KernelRule, str]]:
    """The rules in order (merged by the core), as nftables rules to be; a limit stays a
    KernelRule, with its comment. Within one user rule order does not matter (one verdict), so
    its kernel rules that differ only in the destination port become one rule with a port set,
    and one that has no address and is there in both families is one rule of the inet table for
    both. A rule of one family is always of that family only: a rule there in IPv4 alone, as a
    `to container` rule whose bindings are all IPv4, must not match IPv6 connections."""
    rules = list(enumerate(merged.ruleset.rules))
    for _index, group in itertools.groupby(rules, key=lambda item: item[1].index):
        members = list(group)
        families: dict[Match, set[int]] = {}
        for _pos, rule in members:
            if rule.action != "limit" and _family_free(rule.match):
                families.setdefault(replace(rule.match, family=4), set()).add(rule.match.family)
        by_match: dict[tuple[Match, bool], list[tuple[int, KernelRule]]] = {}
        for pos, rule in members:
            if rule.action == "limit":
                yield rule, merged.comment(pos)
                continue
            m = rule.match
            both = _family_free(m) and len(families[replace(m, family=4)]) == 2
            if both and m.family == 6:
                continue  # its IPv4 twin is the rule for both
            by_match.setdefault((replace(m, dport=None), both), []).append((pos, rule))
        for (base, both), items in by_match.items():
            dports = list(dict.fromkeys(r.match.dport for _, r in items if r.match.dport))
            yield _Spec(base, dports, [r for _, r in items], merged.comment(items[0][0]), both)


def _user_rules(ruleset: Ruleset, merge: MergedRules, sets: list[dict[str, Any]], parts: Parts
                ) -> Iterator[dict[str, Any]]:
    """The user's rules, in order, merged by the core; the port sets their rules use are
    appended to `sets`. A rule on an address set held in two kernel sets is two rules, one per
    part, next to each other with the same verdict: a source is in one part or in neither."""
    by_index: dict[int, list[tuple[KernelRule, str]]] = {}
    for pos, kernel_rule in enumerate(merge.ruleset.rules):
        if pos not in merge.merged:  # a merged run stands for several rules: no tallies
            by_index.setdefault(kernel_rule.index, []).append((kernel_rule, merge.comment(pos)))
    for n, item in enumerate(_specs(merge)):
        index = item[0].index if isinstance(item, tuple) else item.rules[0].index
        for kernel_rule, comment in by_index.pop(index, []):
            for tally in _tally_rules(kernel_rule.match, comment, ruleset):
                yield from _per_part(tally, parts)
        if isinstance(item, tuple):
            rules: Iterable[dict[str, Any]] = _limit_rules(*item, ruleset)
        elif item.rules[0].audit:
            rules = _audit_rules(_spec_rule(item, n, sets), item, ruleset)
        else:
            decision = _spec_rule(item, n, sets)
            first = item.rules[0]
            logged = _log_rules(decision["rule"]["expr"], [4, 6] if item.both_families
                                else [item.match.family], ruleset, first.index,
                                first.action, item.comment) if first.log else []
            rules = [*logged, decision]
        for rule in rules:
            yield from _per_part(rule, parts)


def _tally_rules(match: Match, comment: str, ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    """The decision's per-port counts (core/tallies): its match on one published port with a
    counter, no verdict, before it."""
    for narrowed, name in tallies(match, ruleset.published):
        yield _rule("inbound", [*match_exprs(narrowed, family_specific=True), {"counter": None}],
                    f"{name} {comment}")


def _audit_rules(decision: dict[str, Any], spec: _Spec, ruleset: Ruleset
                 ) -> list[dict[str, Any]]:
    """An audited rule (core/audit): its match with a counter and no verdict counts what it
    would refuse (one rule for both families: a counter before a family's `ip saddr` would
    count the other family's connections too), then its log rules; none decides."""
    first = spec.rules[0]
    exprs = [e for e in decision["rule"]["expr"]
             if not (isinstance(e, dict) and next(iter(e)) in (*_VERDICTS, "counter"))]
    counted = {"rule": {**decision["rule"], "expr": [*exprs, {"counter": None}]}}
    families: list[Family] = [4, 6] if spec.both_families else [spec.match.family]
    return [counted, *_log_rules(exprs, families, ruleset, first.index, would(first.action),
                                 spec.comment)]


def _log_rules(exprs: list[Expr], families: list[Family], ruleset: Ruleset, index: int | None,
               action: str, comment: str, chain: str = "inbound") -> list[dict[str, Any]]:
    """A logged decision's rules before it, with its match: its new connections go to fwsync's
    NFLOG group (core/logging_rules), rate-limited per source (one bucket set per family for
    all of fwsync's log rules; an IPv6 source by its /64) and in all (per rule)."""
    base = [e for e in exprs if not (isinstance(e, dict) and next(iter(e)) in
                                     (*_VERDICTS, "counter"))]
    out = []
    for family in families:
        per_source = {"set": {"op": "update", "elem": _limit_key(family, ruleset.limit),
                              "set": "@" + log_set_name(family),
                              "stmt": [{"limit": {"rate": PER_SOURCE_PER_MINUTE,
                                                  "burst": PER_SOURCE_BURST,
                                                  "per": "minute"}}]}}
        in_all = {"limit": {"rate": IN_ALL_PER_SECOND, "burst": IN_ALL_BURST, "per": "second"}}
        log = {"log": {"prefix": log_prefix(ruleset.log_tag, index, action),
                       "group": LOG_GROUP}}
        out.append(_rule(chain, [*base, per_source, in_all, log], comment))
    return out


def _per_part(rule: dict[str, Any], parts: Parts) -> Iterator[dict[str, Any]]:
    refs = [e["match"]["right"][1:] for e in rule["rule"]["expr"]
            if isinstance(e.get("match", {}).get("right"), str)
            and e["match"]["right"].startswith("@") and e["match"]["right"][1:] in parts]
    if not refs:
        yield rule
        return
    (ref,) = refs  # a rule matches one address set at most (its source)
    for part in parts[ref]:
        yield _rename_refs(rule, {ref: part})


def _spec_rule(spec: _Spec, n: int, sets: list[dict[str, Any]]) -> dict[str, Any]:
    first, m = spec.rules[0], spec.match
    if len(spec.dports) == 1:
        m = replace(m, dport=spec.dports[0])
    exprs = match_exprs(m, family_specific=not spec.both_families)
    if len(spec.dports) > 1:
        name = internal_name("ports", first.index, n)
        sets.append(port_set(name, spec.dports))
        at = 1 if m.proto is not None else 0  # after l4proto, as with a single port
        exprs.insert(at, _match(_ct_orig("proto-dst"), "@" + name))
    verdict: Expr = {"accept": None} if first.action == "allow" else (
        {"drop": None} if first.action == "deny" else _reject(m.proto))
    return _rule("inbound", [*exprs, verdict], spec.comment)


def _limit_rules(rule: KernelRule, comment: str, ruleset: Ruleset
                 ) -> Iterator[dict[str, Any]]:
    """The core's RateLimit: a token bucket per source, kept in a dynamic set. `update`, not
    `add`: every connection, refused ones too, keeps its source's entry from timing out (as
    hashlimit keeps it on iptables), so a steady attacker never gets a fresh bucket.

    At capacity: an `update` that cannot add a new source to a full set matches nothing, so
    the source set (`seen`, `capacity` sources, no state) is updated first and a source it
    could not take is dropped, as hashlimit hot-drops it. Only then is the bucket's set asked,
    which has room to spare. Not one set for both: a lookup in the bucket's set would evaluate
    (and take from) the source's bucket a second time.

    Logged refusals: over the rate, a jump to the `limited` chain, which logs and refuses (the
    rate is asked once; a log rule asking it again would take from the bucket twice). A
    connection comes there only from its own rule (see iptables_render._limited_lines)."""
    limit = ruleset.limit
    m = rule.match
    key = _limit_key(m.family, limit)
    # The set statements' and lookup's `ip saddr` already confine a rule to one family
    # (nftables adds, and lists without, that dependency); the accept must say so itself.
    exprs = match_exprs(m, family_specific=False)
    seen = "@" + limit_seen_name(rule.index, m.family)
    meter = "@" + limit_set_name(rule.index, m.family)
    over = {"set": {"op": "update", "elem": key, "set": meter,
                    "stmt": [{"limit": {"rate": limit.per_minute, "burst": limit.burst,
                                        "per": "minute", "inv": True}}]}}
    if rule.audit:
        # Audited (core/audit): over the rate, counted, then logged (the log's own limits
        # after the counter); no verdict. A source the full meter cannot take is not counted.
        log = _log_rules([*exprs, over], [m.family], ruleset, rule.index, would(rule.action),
                         comment)[0]
        body = log["rule"]["expr"]
        at = len(exprs) + 1
        yield {"rule": {**log["rule"], "expr": [*body[:at], {"counter": None}, *body[at:]]}}
        return
    yield _rule("inbound", [*exprs, {"set": {"op": "update", "elem": key, "set": seen}}],
                comment)
    yield _rule("inbound", [*exprs, _match(key, seen, "!="), {"drop": None}], comment)
    refuse = {"jump": {"target": LIMITED_CHAIN}} if rule.log_refused else _reject(m.proto)
    yield _rule("inbound", [*exprs, over, refuse], comment)
    own = match_exprs(m, family_specific=True)
    if rule.log:  # under the rate: what it lets in
        yield from _log_rules(own, [m.family], ruleset, rule.index, "allow", comment)
    yield _rule("inbound", [*own, {"accept": None}], comment)
    if rule.log_refused:
        # As nft lists them: the log's `ip saddr` carries the family; a reject right after
        # the match would be listed without its `meta nfproto` (the counter keeps it listed).
        yield from _log_rules(exprs, [m.family], ruleset, rule.index, LIMIT_REFUSED, comment,
                              LIMITED_CHAIN)
        yield _rule(LIMITED_CHAIN, [*own, {"counter": None}, _reject(m.proto)], comment)


def _limit_key(family: Family, limit: RateLimit) -> Expr:
    """What a limit counts by: the source address, an IPv6 one masked to its network."""
    if family == 4:
        return _saddr(4)
    mask = ipaddress.IPv6Network(f"::/{limit.ipv6_prefix}").netmask
    return {"&": [_saddr(6), str(mask)]}


def _forward_rules(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    # Only the first packet of a connection is judged; the rest is Docker's business.
    yield _rule("forward", [_match({"ct": {"key": "state"}}, "new", "!="), {"return": None}])
    # From a Docker network: container egress or container-to-container, not governed.
    yield from _own_traffic("forward", ruleset)
    for bridge in ruleset.bridges:
        yield _rule("forward", [_match(_meta("oifname"), _iface(bridge.name)),
                                {"jump": {"target": "inbound"}}])
    for subnet in ruleset.bridge_subnets:
        # A bridge whose name can't be written literally: its subnet is the address after DNAT.
        family: Family = 6 if ":" in subnet else 4
        daddr = {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": "daddr"}}
        yield _rule("forward", [_match(daddr, _addr(subnet)), {"jump": {"target": "inbound"}}])
    # Out of any other interface: a DNATed connection is one a port was published for, as all of
    # Docker's are (a bridge named after `apply`, Swarm's mesh). Judged without knowing the name.
    yield _rule("forward", [_match({"ct": {"key": "status"}}, "dnat", "in"),
                            {"jump": {"target": "inbound"}}])
    # Not DNATed, into any other bridge: straight to a container's address on a network made
    # after `apply` (or Docker's own, when it could not be asked), whatever its name. Matched
    # by the interface's kind, which no name changes; the host's own bridges (a router's LAN)
    # are left to the host.
    for own in ruleset.host_bridges:
        yield _rule("forward", [_match(_meta("oifname"), _iface(own)), {"return": None}],
                    "fwsync host bridge")
    yield _rule("forward", [_match(_meta("oifkind"), "bridge"), {"jump": {"target": "inbound"}}],
                "fwsync any other bridge")


def _own_traffic(chain: str, ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    """A trusted bridge's own traffic (core/bridges.py): from its network's subnets, arriving
    on it. Anything else arriving on it, or on a bridge not trusted, goes on to be judged."""
    for bridge in ruleset.bridges:
        for family in FAMILIES:
            for subnet in bridge.subnets_for(family):
                yield _rule(chain, [_match(_meta("iifname"), _iface(bridge.name)),
                                    _match(_saddr(family), _addr(subnet)), {"return": None}])


def _input_rules(ruleset: Ruleset, catchall: bool) -> Iterator[dict[str, Any]]:
    yield _rule("input", [_match({"ct": {"key": "state"}}, "new", "!="), {"return": None}])
    # The host itself and its containers: not governed, as on the forward path.
    yield _rule("input", [_match(_meta("iifname"), "lo"), {"return": None}])
    yield from _own_traffic("input", ruleset)
    for family in FAMILIES:
        for port in ruleset.input_ports_for(family):
            yield _rule("input", [*match_exprs(port.match, family_specific=True),
                                  {"jump": {"target": "inbound"}}],
                        f"fwsync docker-proxy {port.binding}")
    if catchall:
        yield _rule("input", [{"jump": {"target": PROXY_CHAIN}}],
                    "fwsync docker-proxy: a port published later")


PROXY_COMMENT = "fwsync docker-proxy: any port, published now or later"


def proxy_line(cgroup: ProxyCgroup) -> str | None:
    """The catch-all's rule, as nft lists it: a new connection (input's first rule returns
    the rest) to a socket of a process in dockerd's cgroup is docker-proxy's, whatever its
    port, and the rules decide."""
    if cgroup_path_problem(cgroup.nft_path) or not 0 < cgroup.level < 256:
        return None  # observe/proxy_cgroup refuses these: no catch-all rather than syntax
    return (f'socket cgroupv2 level {cgroup.level} "{cgroup.nft_path}" jump inbound '
            f'comment "{PROXY_COMMENT}"')


def has_proxy_catchall(line: str) -> bool:
    """Whether a listed rule of the proxy chain is the catch-all on a cgroup that exists (nft
    lists one that is gone by its number, not its path)."""
    return line.startswith("socket cgroupv2 level ") and ' "' in line \
        and " jump inbound" in line


OWN_COMMENT = "fwsync dockerd's own socket: the host's firewall decides"


def _proxy_objects(ruleset: Ruleset) -> Batch:
    cgroup = ruleset.proxy_cgroup
    line = None if cgroup is None else proxy_line(cgroup)
    if cgroup is None or line is None:
        return []
    # dockerd's own sockets share docker-proxy's cgroup: the host's, not a container's. One
    # rule per port: nft 1.0.6 lists an anonymous set of `ct original proto-dst` as garbage.
    own = [f"meta l4proto {proto} ct original proto-dst {port} return comment "
           f'"{OWN_COMMENT}"' for proto, port in cgroup.own_ports]
    return [{"chain": {**in_table(), "name": PROXY_CHAIN}},
            *({TEXT_RULE: {"chain": PROXY_CHAIN, "line": text}} for text in (*own, line))]


def _direct_rules(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    if not ruleset.protect_direct_routing:
        return
    # To this host, not routed: a port docker-proxy listens on, reached from `input` (on the
    # forward path the destination is never local).
    local = {"fib": {"result": "type", "flags": ["daddr"]}}
    yield _rule("direct", [_match(local, "local"), {"return": None}],
                "fwsync docker-proxy: the rules decide")
    for ok in ruleset.direct_ok:
        daddr = {"payload": {"protocol": "ip" if ok.family == 4 else "ip6", "field": "daddr"}}
        yield _rule("direct", [_match(_meta("oifname"), _iface(ok.bridge)),
                               _match(daddr, _addr(ok.subnet)), {"return": None}],
                    f"fwsync {ok.label}: the rules decide")
    yield _rule("direct", [{"drop": None}], "fwsync protect direct-routing")


def _inbound_rules(ruleset: Ruleset, merge: MergedRules, sets: list[dict[str, Any]],
                   parts: Parts) -> Iterator[dict[str, Any]]:
    if ruleset.protect_direct_routing:
        # Not DNATed means not through a published port: straight to a container's address
        # (dropped in `direct`), or to this host's docker-proxy (the input path).
        yield _rule("inbound", [_match({"&": [{"ct": {"key": "status"}}, "dnat"]}, "dnat", "!="),
                                {"jump": {"target": "direct"}}], "fwsync protect direct-routing")
    if ruleset.protect_localhost_publish:
        yield _rule("inbound", [_match(_ct_orig("ip daddr"), _addr("127.0.0.0/8")),
                                {"drop": None}], "fwsync protect localhost-publish")
        yield _rule("inbound", [_match(_ct_orig("ip6 daddr"), "::1"), {"drop": None}],
                    "fwsync protect localhost-publish")
    yield from _user_rules(ruleset, merge, sets, parts)
    if any(r.log_refused for r in ruleset.rules):
        # Fail closed: whatever else comes to `limited` is refused, never let in.
        yield _rule(LIMITED_CHAIN, [{"counter": None}, _reject(None)], "fwsync limit refused")
    origin = ruleset.default_origin
    where = f"{origin.short} " if origin else ""
    for family in FAMILIES:
        yield from _tally_rules(Match(family=family), f"{where}default "
                                f"{ruleset.audit_default or ruleset.default}", ruleset)
    if ruleset.audit_default is not None:
        # Audited (core/audit): counted and logged as what it would do; the enforced default
        # below (allow) lets the connection on.
        audited = f"{where}default {ruleset.audit_default}"
        yield _rule("inbound", [{"counter": None}], audited)
        yield from _log_rules([], [4, 6], ruleset, None, would(ruleset.audit_default), audited)
    comment = f"{where}default {ruleset.default}"
    if ruleset.log_default:
        yield from _log_rules([], [4, 6], ruleset, None, ruleset.default, comment)
    if ruleset.default == "allow":
        yield _rule("inbound", [{"accept": None}], comment)
    elif ruleset.default == "deny":
        yield _rule("inbound", [{"drop": None}], comment)
    else:
        yield _rule("inbound", [_match(_meta("l4proto"), "tcp"), _reject("tcp")], comment)
        yield _rule("inbound", [_reject(None)], comment)


def table_objects(ruleset: Ruleset) -> Batch:
    """Everything the table holds, in creation order (sets before the rules that use them).
    Sets are named by their content, so a set whose content is unchanged keeps its name and is
    left alone by an apply, and a changed one is a new set (see
    nft_transactions.staging_batch)."""
    rule_sets: list[dict[str, Any]] = []
    parts: Parts = {}
    merge = merge_runs(ruleset)
    # The defines' sets and the merged rules' sources: names apart (core/merge), one namespace.
    define_sets = list(ruleset_sets(merge.ruleset, parts))
    inbound = list(_inbound_rules(ruleset, merge, rule_sets, parts))
    sets = list(distinct_names(itertools.chain(define_sets, rule_sets)))
    names = {s["set"]["name"]: content_name(s["set"]) for s in sets}
    for s in sets:
        s["set"]["name"] = names[s["set"]["name"]]
    objects: Batch = [{"table": {"family": FAMILY, "name": TABLE}}, *sets]
    objects.append({"chain": {**in_table(), "name": "forward", "type": "filter", "hook": "forward",
                              "prio": FORWARD_PRIORITY, "policy": "accept"}})
    objects.append({"chain": {**in_table(), "name": "input", "type": "filter", "hook": "input",
                              "prio": INPUT_PRIORITY, "policy": "accept"}})
    objects.append({"chain": {**in_table(), "name": "inbound"}})
    objects.append({"chain": {**in_table(), "name": "direct"}})
    if any(r["rule"]["chain"] == LIMITED_CHAIN for r in inbound):
        objects.append({"chain": {**in_table(), "name": LIMITED_CHAIN}})
    proxy = _proxy_objects(ruleset)
    objects.extend(o for o in proxy if "chain" in o)
    objects.extend(_forward_rules(ruleset))
    objects.extend(_input_rules(ruleset, catchall=bool(proxy)))
    objects.extend(_rename_refs(r, names) for r in inbound)
    objects.extend(_direct_rules(ruleset))
    objects.extend(o for o in proxy if TEXT_RULE in o)
    return objects


def _rename_refs(item: Any, names: dict[str, str]) -> Any:
    if isinstance(item, str) and item.startswith("@") and item[1:] in names:
        return "@" + names[item[1:]]
    if isinstance(item, dict):
        return {k: _rename_refs(v, names) for k, v in item.items()}
    if isinstance(item, list):
        return [_rename_refs(v, names) for v in item]
    return item


def render(ruleset: Ruleset) -> dict[str, tuple[str, ...]]:
    return objects_state(table_objects(ruleset))
