"""Ruleset → fwsync's nftables table, as libnftables JSON, and JSON → readable lines. Pure.

One `table inet fwsync` holds everything, IPv4 and IPv6 together:

    chain forward   hook forward, priority -1 (before Docker's and iptables-nft's filter at 0):
                    only NEW connections from outside into a Docker bridge, or DNATed to
                    anywhere (a published port), go on to `inbound`
    chain input     hook input, priority -1 (before ufw's and iptables-nft's filter at 0):
                    only NEW connections to the ports docker-proxy listens on go to `inbound`
    chain inbound   the protections, the user's rules in order, the default
    chain direct    what was not DNATed: to the host (docker-proxy) and into routed networks
                    back to `inbound`, everything else dropped (protect direct-routing)

An nftables `accept` only ends this table's say: the packet still meets Docker's chains and
anyone else's. That is all `allow` needs (fwsync narrows, Docker still decides), while `deny`
(drop) and `reject` are final everywhere, and `limit` rejects what exceeds its rate and
accepts the rest. So every verdict that keeps a connection out is one the kernel makes final.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from fwsync.backends.base import LIST_BELOW
from fwsync.core.build import FAMILIES
from fwsync.core.kernel_text import checked_iface, comment_text
from fwsync.core.merge import MergedRules, internal_name, merge_runs
from fwsync.core.ruleset import Family, KernelRule, Match, RateLimit, Ruleset
from fwsync.rules.addresses import kernel_text
from fwsync.rules.model import PortRange

TABLE = "fwsync"
FAMILY = "inet"
# Docker's filter chains (and iptables-nft's FORWARD) hook forward at priority 0 ("filter"):
# one less runs first, so a drop here happens before anything there can accept.
FORWARD_PRIORITY = -1
# ufw (through iptables-nft or -legacy) and iptables-nft's INPUT hook input at 0 as well: an
# fwsync drop comes first; its accept is not final, so the host's INPUT rules still decide.
INPUT_PRIORITY = -1
_COMMENT_MAX = 120  # nftables keeps at most 128 bytes of a rule comment

Expr = dict[str, Any]
Batch = list[dict[str, Any]]


def _t() -> dict[str, str]:
    return {"family": FAMILY, "table": TABLE}


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


def _set_elem(cidr: str) -> Any:
    """_addr for a set element, which is already canonical (`str` of a collapsed network):
    split, not parsed, since a set may hold 100k of them."""
    addr, _, plen = cidr.partition("/")
    if not plen or int(plen) == (128 if ":" in addr else 32):
        return addr
    return {"prefix": {"addr": addr, "len": int(plen)}}


def _iface(name: str) -> str:
    """fwsync's prefix `eth+` is nftables' `eth*`; every other character of a checked name
    means itself to nftables (no `*` or `\\` can be left in it)."""
    name = checked_iface(name)
    return name[:-1] + "*" if name.endswith("+") else name


def set_name(name: str, family: Family) -> str:
    return f"{name}_v{family}"


def limit_set_name(index: int, family: Family) -> str:
    """A limit's meter: in fwsync's own namespace of names (core/merge), which no define's
    name enters, as the merged rules' source sets and the port sets are."""
    return set_name(internal_name("limit", index), family)


def limit_seen_name(index: int, family: Family) -> str:
    """The sources a limit holds a bucket for: `capacity` of them at most (fwsync's own
    namespace of names, as limit_set_name)."""
    return set_name(internal_name("seen", index), family)


def chain_key(chain: str) -> str:
    return f"{FAMILY} {TABLE} chain {chain}"


def set_key(name: str, kind: str) -> str:
    return f"{FAMILY} {TABLE} set {name} ({kind})"


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


def _rule(chain: str, exprs: list[Expr], comment: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {**_t(), "chain": chain, "expr": exprs}
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


def _pr(p: PortRange) -> tuple[int, int]:
    return (p.low, p.high)


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


Parts = dict[str, list[str]]  # an address set's name → the kernel sets that hold it


def _user_rules(ruleset: Ruleset, merge: MergedRules, sets: list[dict[str, Any]], parts: Parts
                ) -> Iterator[dict[str, Any]]:
    """The user's rules, in order, merged by the core; the port sets their rules use are
    appended to `sets`. A rule on an address set held in two kernel sets is two rules, one per
    part, next to each other with the same verdict: a source is in one part or in neither."""
    for n, item in enumerate(_specs(merge)):
        rules = _limit_rules(*item, ruleset.limit) if isinstance(item, tuple) \
            else iter([_spec_rule(item, n, sets)])
        for rule in rules:
            yield from _per_part(rule, parts)


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


def _set_parts(name: str, family: Family, elements: Iterable[str]) -> list[dict[str, Any]]:
    """An address set as the kernel holds it: its single addresses in a plain set (a hash),
    its networks in an interval set, each there only when it has any. One interval set for
    both took libnftables 0.64-0.9 s to create with 100k elements, nine in ten of them single
    addresses, and ~1.2 s of CPU to list; the hash set of the 90k beside the interval set of
    the 10k took 0.26-0.29 s to create and ~0.35 s to list. The packet path pays one more
    lookup for a source that is not in the first part."""
    hosts: list[Any] = []
    nets: list[Any] = []
    whole = "/32" if family == 4 else "/128"
    for cidr in elements:  # canonical CIDR text (split_set): a host ends in its whole length
        if cidr.endswith(whole):
            hosts.append(cidr[:-len(whole)])
        else:
            nets.append(_set_elem(cidr))
    base = set_name(name, family)
    out: list[dict[str, Any]] = []
    if hosts:
        out.append({"set": {**_t(), "name": base + HOSTS_SUFFIX, "type": _set_type(family),
                            "elem": hosts}})
    if nets or not hosts:
        out.append({"set": {**_t(), "name": base, "type": _set_type(family),
                            "flags": ["interval"], "elem": nets}})
    return out


HOSTS_SUFFIX = "_h"  # the part of an address set that holds single addresses


def _spec_rule(spec: _Spec, n: int, sets: list[dict[str, Any]]) -> dict[str, Any]:
    first, m = spec.rules[0], spec.match
    if len(spec.dports) == 1:
        m = replace(m, dport=spec.dports[0])
    exprs = match_exprs(m, family_specific=not spec.both_families)
    if len(spec.dports) > 1:
        name = internal_name("ports", first.index, n)
        sets.append({"set": {**_t(), "name": name, "type": "inet_service",
                             "flags": ["interval"], "elem": _port_elements(spec.dports)}})
        at = 1 if m.proto is not None else 0  # after l4proto, as with a single port
        exprs.insert(at, _match(_ct_orig("proto-dst"), "@" + name))
    verdict: Expr = {"accept": None} if first.action == "allow" else (
        {"drop": None} if first.action == "deny" else _reject(m.proto))
    return _rule("inbound", [*exprs, verdict], spec.comment)


def _port_elements(ports: list[PortRange]) -> list[Any]:
    """Sorted, overlaps and neighbours merged: an interval set refuses overlapping elements."""
    merged: list[list[int]] = []
    for p in sorted(ports, key=_pr):
        if merged and p.low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], p.high)
        else:
            merged.append([p.low, p.high])
    return [lo if lo == hi else {"range": [lo, hi]} for lo, hi in merged]


def _limit_rules(rule: KernelRule, comment: str, limit: RateLimit
                 ) -> Iterator[dict[str, Any]]:
    """The core's RateLimit: a token bucket per source, kept in a dynamic set. `update`, not
    `add`: every connection, refused ones too, keeps its source's entry from timing out (as
    hashlimit keeps it on iptables), so a steady attacker never gets a fresh bucket.

    At capacity: an `update` that cannot add a new source to a full set matches nothing, so
    the source set (`seen`, `capacity` sources, no state) is updated first and a source it
    could not take is dropped, as hashlimit hot-drops it. Only then is the bucket's set asked,
    which has room to spare. Not one set for both: a lookup in the bucket's set would evaluate
    (and take from) the source's bucket a second time."""
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
    yield _rule("inbound", [*exprs, {"set": {"op": "update", "elem": key, "set": seen}}],
                comment)
    yield _rule("inbound", [*exprs, _match(key, seen, "!="), {"drop": None}], comment)
    yield _rule("inbound", [*exprs, over, _reject(m.proto)], comment)
    yield _rule("inbound", [*match_exprs(m, family_specific=True), {"accept": None}],
                comment)


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


def _input_rules(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    yield _rule("input", [_match({"ct": {"key": "state"}}, "new", "!="), {"return": None}])
    # The host itself and its containers: not governed, as on the forward path.
    yield _rule("input", [_match(_meta("iifname"), "lo"), {"return": None}])
    yield from _own_traffic("input", ruleset)
    for family in FAMILIES:
        for port in ruleset.input_ports_for(family):
            yield _rule("input", [*match_exprs(port.match, family_specific=True),
                                  {"jump": {"target": "inbound"}}],
                        f"fwsync docker-proxy {port.binding}")


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
    origin = ruleset.default_origin
    where = f"{origin.short} " if origin else ""
    comment = f"{where}default {ruleset.default}"
    if ruleset.default == "allow":
        yield _rule("inbound", [{"accept": None}], comment)
    elif ruleset.default == "deny":
        yield _rule("inbound", [{"drop": None}], comment)
    else:
        yield _rule("inbound", [_match(_meta("l4proto"), "tcp"), _reject("tcp")], comment)
        yield _rule("inbound", [_reject(None)], comment)


def _sets(ruleset: Ruleset, parts: Parts) -> Iterator[dict[str, Any]]:
    for aset in ruleset.sets:
        held = _set_parts(aset.name, aset.family, aset.elements)
        parts[set_name(aset.name, aset.family)] = [h["set"]["name"] for h in held]
        yield from held
    limit = ruleset.limit
    # One meter per user rule and family, whatever protocols and ports it expands to, as
    # hashlimit's table is one per rule (`fwsync-INDEX`) in each family's iptables.
    meters = dict.fromkeys((r.index, r.match.family) for r in ruleset.rules
                           if r.action == "limit")
    for index, family in meters:
        # The buckets' set has room for twice the sources `seen` admits: a source `seen`
        # holds must always find room for its bucket, also while expired buckets await
        # the kernel's garbage collection.
        for name, size in ((limit_seen_name(index, family), limit.capacity),
                           (limit_set_name(index, family), 2 * limit.capacity)):
            yield {"set": {**_t(), "name": name, "type": _set_type(family), "size": size,
                           "flags": ["timeout"], "timeout": limit.forget_after}}


def _set_type(family: Family) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


def table_objects(ruleset: Ruleset) -> Batch:
    """Everything the table holds, in creation order (sets before the rules that use them).
    Sets are named by their content, so a set whose content is unchanged keeps its name and is
    left alone by an apply, and a changed one is a new set (see `staging_batch`)."""
    rule_sets: list[dict[str, Any]] = []
    parts: Parts = {}
    merge = merge_runs(ruleset)
    # The defines' sets and the merged rules' sources: names apart (core/merge), one namespace.
    define_sets = list(_sets(merge.ruleset, parts))
    inbound = list(_inbound_rules(ruleset, merge, rule_sets, parts))
    sets = list(_distinct(itertools.chain(define_sets, rule_sets)))
    names = {s["set"]["name"]: _content_name(s["set"]) for s in sets}
    for s in sets:
        s["set"]["name"] = names[s["set"]["name"]]
    objects: Batch = [{"table": {"family": FAMILY, "name": TABLE}}, *sets]
    objects.append({"chain": {**_t(), "name": "forward", "type": "filter", "hook": "forward",
                              "prio": FORWARD_PRIORITY, "policy": "accept"}})
    objects.append({"chain": {**_t(), "name": "input", "type": "filter", "hook": "input",
                              "prio": INPUT_PRIORITY, "policy": "accept"}})
    objects.append({"chain": {**_t(), "name": "inbound"}})
    objects.append({"chain": {**_t(), "name": "direct"}})
    objects.extend(_forward_rules(ruleset))
    objects.extend(_input_rules(ruleset))
    objects.extend(_rename_refs(r, names) for r in inbound)
    objects.extend(_direct_rules(ruleset))
    return objects


def writable_objects(listed: Batch) -> Batch:
    """The table as the kernel lists it (`list table`, without its table object) → objects an
    apply writes back as they were: what table_objects would have rendered for them. Handles
    go, and so does the traffic's per-source state in a limit's set."""
    objects: Batch = [{"table": {"family": FAMILY, "name": TABLE}}]
    for obj in listed:
        ((kind, body),) = obj.items()
        if kind not in ("set", "chain", "rule"):  # the dormant marker too: apply wakes it
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "set" and is_meter({"set": body}):
            body.pop("elem", None)
            body["flags"] = [f for f in body.get("flags", []) if f != "dynamic"]
        objects.append({kind: body})
    return objects


def content_base(s: dict[str, Any]) -> tuple[str, str] | None:
    """(the name without its content digest, the type) of a set: what a set rendered from the
    same define (or the same merged rule) keeps when its content changes. None for a name
    _content_name did not make."""
    base, sep, digest = str(s.get("name", "")).rpartition("_")
    if not sep or len(digest) != 8 or not all(c in "0123456789abcdef" for c in digest):
        return None
    return base, str(s.get("type"))


def replaced_by(desired: Mapping[str, tuple[str, ...]]) -> dict[tuple[str, str], int]:
    """content_base → element count of the big sets (LIST_BELOW or more) desired holds, from
    their state keys: a set in the kernel with the same base but another digest is the one
    such a set replaces."""
    prefix = f"{FAMILY} {TABLE} set "
    out: dict[tuple[str, str], int] = {}
    for key, lines in desired.items():
        if not key.startswith(prefix) or len(lines) < LIST_BELOW:
            continue
        name, _, kind = key[len(prefix):].partition(" (")
        base = content_base({"name": name, "type": kind.removesuffix(")")})
        if base is not None and "," not in base[1]:  # not a limit's per-source set
            out[base] = len(lines)
    return out


def _content_name(definition: dict[str, Any]) -> str:
    content = json.dumps({k: v for k, v in definition.items() if k != "name"}, sort_keys=True)
    return f"{definition['name']}_{hashlib.sha256(content.encode()).hexdigest()[:8]}"


def _rename_refs(item: Any, names: dict[str, str]) -> Any:
    if isinstance(item, str) and item.startswith("@") and item[1:] in names:
        return "@" + names[item[1:]]
    if isinstance(item, dict):
        return {k: _rename_refs(v, names) for k, v in item.items()}
    if isinstance(item, list):
        return [_rename_refs(v, names) for v in item]
    return item


def _distinct(items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every set under a name of its own. Two of one name once meant one was dropped and its
    rules used the other (a define named like a merged rule's set): names are apart now
    (core/merge), and were they ever not, nothing is applied."""
    seen: set[str] = set()
    for item in items:
        key = item["set"]["name"]
        if key in seen:
            raise ValueError(f"two sets of fwsync's table would be named {key!r}")
        seen.add(key)
        yield item


def set_names(objects: Batch) -> list[str]:
    return [o["set"]["name"] for o in objects if "set" in o]


def set_key_names(objects: Batch) -> dict[str, str]:
    """State key → kernel name, for the sets among these objects."""
    return {set_object_key(o["set"]): o["set"]["name"] for o in objects if "set" in o}


def set_object_key(s: dict[str, Any]) -> str:
    """A set's state key (objects_state's), from its name and type: no element is looked at."""
    if "timeout" in s.get("flags", []) or "dynamic" in s.get("flags", []):
        return set_key(s["name"], f"{s['type']}, per-source limit")
    return set_key(s["name"], s["type"])


def _head() -> Batch:
    return [{"metainfo": {"json_schema_version": 1}},
            {"add": {"table": {"family": FAMILY, "name": TABLE}}}]


def staging_batch(objects: Batch, existing_sets: Collection[str]) -> Batch:
    """The first of an apply's two transactions: the sets that do not exist yet, with their
    elements, and nothing that uses them, so packets see no change.

    Why not one transaction: the kernel makes a new generation of rules visible before it has
    finished publishing the elements of sets created in the same transaction, so a packet can
    meet a new rule whose new set still looks empty. The atomicity test saw about one lost
    connection in 10k while the table was replaced with rules that point at new sets, and none
    once the sets were created (and committed) before the rules that use them."""
    return [*_head(), *({"add": o} for o in objects if "set" in o and not is_meter(o)
                        and o["set"]["name"] not in existing_sets)]


def is_meter(obj: dict[str, Any]) -> bool:
    """A limit's per-source set. It must be created in the same transaction as the rule that
    updates it from the packet path (libnftables then marks it dynamic); it starts empty, so
    there is nothing whose publication a packet could overtake."""
    return "timeout" in obj["set"].get("flags", [])


ChainHead = tuple[Any, Any, Any]  # (type, hook, prio); all None for a regular chain


def chain_head(chain: dict[str, Any]) -> ChainHead:
    return chain.get("type"), chain.get("hook"), chain.get("prio")


def chain_heads(objects: Batch) -> dict[str, ChainHead]:
    return {o["chain"]["name"]: chain_head(o["chain"]) for o in objects if "chain" in o}


def switch_batch(objects: Batch, existing_sets: Collection[str],
                 rebuild: Collection[str] = (),
                 existing_chains: Mapping[str, ChainHead] | None = None) -> Batch:
    """The second transaction, the one packets notice: every rule is replaced at once, and the
    sets nothing uses any more go. `rebuild` names sets that exist but were edited by hand
    (drift): they are emptied and refilled here. Chains of the table that fwsync does not
    want (a hand-made one), or whose hook, type or priority is not fwsync's (a base chain
    re-made to run after Docker's), go too, and fwsync's are made anew; a chain's policy is
    put right by `add` itself. The table itself is added without flags, which also wakes it
    if someone made it dormant."""
    wanted = set(set_names(objects))
    table = {"table": {"family": FAMILY, "name": TABLE}}
    batch = [*_head(), {"flush": table}]  # flushes rules; sets and chains stay
    heads = chain_heads(objects)
    batch += [{"delete": {"chain": {**_t(), "name": name}}}
              for name, head in (existing_chains or {}).items() if heads.get(name) != head]
    batch += [{"delete": {"set": {**_t(), "name": n}}} for n in existing_sets if n not in wanted]
    for o in objects:
        if "set" in o and o["set"]["name"] in rebuild:
            batch.append({"flush": {"set": {**_t(), "name": o["set"]["name"]}}})
            if o["set"].get("elem"):
                batch.append({"add": {"element": {**_t(), "name": o["set"]["name"],
                                                  "elem": o["set"]["elem"]}}})
    batch += [{"add": o} for o in objects if "set" in o and is_meter(o)
              and o["set"]["name"] not in existing_sets]
    batch += [{"add": o} for o in objects if "set" not in o and "table" not in o]
    return batch


def cleanup_batch(staged: Collection[str], table_existed: bool) -> Batch:
    """Undo a staging transaction whose switch failed: the kernel is left as it was."""
    if not table_existed:
        return delete_batch()
    return [*_head(), *({"delete": {"set": {**_t(), "name": n}}} for n in staged)]


def delete_batch() -> Batch:
    table = {"table": {"family": FAMILY, "name": TABLE}}
    return [{"metainfo": {"json_schema_version": 1}}, {"add": table}, {"delete": table}]


# -- JSON → readable lines (the same function for rendered and read-back objects) -------------

def _fmt(e: Any) -> str:
    if isinstance(e, str | int):
        return str(e)
    if isinstance(e, list):
        return "{ " + ", ".join(_fmt(x) for x in e) + " }"
    if not isinstance(e, dict) or len(e) != 1:
        return json.dumps(e, sort_keys=True)
    (kind, v), = e.items()
    if kind == "match":
        op = "" if v["op"] in ("==", "in") else f"{v['op']} "
        return f"{_fmt(v['left'])} {op}{_fmt(v['right'])}"
    if kind == "meta":
        return f"meta {v['key']}"
    if kind == "ct":
        return f"ct {v['dir'] + ' ' if 'dir' in v else ''}{v['key']}"
    if kind == "payload":
        return f"{v['protocol']} {v['field']}"
    if kind == "fib":
        flags = v.get("flags", [])
        return f"fib {' . '.join([flags] if isinstance(flags, str) else flags)} {v['result']}"
    if kind == "prefix":
        return f"{v['addr']}/{v['len']}"
    if kind == "range":
        return f"{_fmt(v[0])}-{_fmt(v[1])}"
    if kind == "&":
        return " & ".join(_fmt(x) for x in v)
    if kind == "set" and isinstance(v, list):
        return _fmt(v)
    if kind in ("accept", "drop", "return") and v is None:
        return str(kind)
    if kind == "jump":
        return f"jump {v['target']!s}"
    if kind == "reject":
        return f"reject with {v.get('type')}" + (f" {v['expr']}" if "expr" in v else "")
    if kind == "set" and isinstance(v, dict):
        inner = " ".join([_fmt(v["elem"]), *(_fmt(s) for s in v.get("stmt", []))])
        return f"{v['op']} {v['set']} {{ {inner} }}"
    if kind == "limit":
        over = "over " if v.get("inv") else ""
        return f"limit rate {over}{v['rate']}/{v.get('per', 'second')} burst {v.get('burst', 0)}"
    return json.dumps(e, sort_keys=True)


def rule_line(rule: dict[str, Any]) -> str:
    text = " ".join(_fmt(e) for e in rule["expr"])
    return text + (f' comment "{rule["comment"]}"' if rule.get("comment") else "")


TABLE_KEY = f"{FAMILY} {TABLE} table"


def objects_state(objects: Batch) -> dict[str, tuple[str, ...]]:
    """Table objects (rendered, or as the kernel lists them) → named objects of lines."""
    state: dict[str, list[str]] = {}
    for obj in objects:
        if "dormant" in obj:  # the backend's marker: no such object is ever rendered
            state[TABLE_KEY] = ["flags dormant: the kernel runs none of the table's rules"]
        elif "chain" in obj:
            c = obj["chain"]
            head = (f"hook {c['hook']} priority {c.get('prio')} policy {c.get('policy')}"
                    if "hook" in c else "regular chain")
            state.setdefault(chain_key(c["name"]), []).insert(0, head)
        elif "rule" in obj:
            state.setdefault(chain_key(obj["rule"]["chain"]), []).append(rule_line(obj["rule"]))
        elif "set" in obj:
            s = obj["set"]
            if "timeout" in s.get("flags", []) or "dynamic" in s.get("flags", []):
                # A limit's per-source state: its elements come and go with traffic.
                state[set_key(s["name"], f"{s['type']}, per-source limit")] = []
            else:
                # A hash set's elements are plain strings already (100k of them at times).
                elems = [e if e.__class__ is str else _elem_text(e) for e in s.get("elem", [])]
                elems.sort()
                state[set_key(s["name"], s["type"])] = elems
    return {k: tuple(v) for k, v in state.items()}


def _elem_text(e: Any) -> str:
    if isinstance(e, dict) and "prefix" in e:
        # Both sides hold canonical text here (the kernel lists it so, and _set_elem renders
        # from collapsed networks): no need to parse 10k addresses again.
        return f"{e['prefix']['addr']}/{e['prefix']['len']}"
    if isinstance(e, dict) and "range" in e:
        return "-".join(str(x) for x in e["range"])
    if isinstance(e, dict) and "elem" in e:
        return _elem_text(e["elem"]["val"])  # an element with options (timeout)
    return str(e)


def render(ruleset: Ruleset) -> dict[str, tuple[str, ...]]:
    return objects_state(table_objects(ruleset))
