"""Ruleset → fwsync's nftables table, as libnftables JSON, and JSON → readable lines. Pure.

One `table inet fwsync` holds everything, IPv4 and IPv6 together:

    chain forward   hook forward, priority -1 (before Docker's and iptables-nft's filter at 0):
                    only NEW connections from outside into a Docker bridge go on to `inbound`
    chain inbound   the protections, the user's rules in order, the default

An nftables `accept` only ends this table's say: the packet still meets Docker's chains and
anyone else's. That is all `allow` needs (fwsync narrows, Docker still decides), while `deny`
(drop) and `reject` are final everywhere, and `limit` rejects what exceeds its rate and
accepts the rest. So every verdict that keeps a connection out is one the kernel makes final.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

from fwsync.core.ruleset import Family, KernelRule, Match, Ruleset

TABLE = "fwsync"
FAMILY = "inet"
# Docker's filter chains (and iptables-nft's FORWARD) hook forward at priority 0 ("filter"):
# one less runs first, so a drop here happens before anything there can accept.
FORWARD_PRIORITY = -1
LIMIT_RATE_PER_MINUTE = 10  # ufw's limit allows 5 new connections per source per 30 s
LIMIT_BURST = 5
LIMIT_TIMEOUT_S = 30
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
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _iface(name: str) -> str:
    return name[:-1] + "*" if name.endswith("+") else name  # iptables' eth+ is nftables' eth*


def set_name(name: str, family: Family) -> str:
    return f"{name}_v{family}"


def limit_set_name(index: int, family: Family) -> str:
    return f"limit_{index}_v{family}"


def chain_key(chain: str) -> str:
    return f"{FAMILY} {TABLE} chain {chain}"


def set_key(name: str, kind: str) -> str:
    return f"{FAMILY} {TABLE} set {name} ({kind})"


def set_element(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _saddr(family: Family) -> Expr:
    return {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": "saddr"}}


def _port(r: Any) -> Any:
    return r.low if r.low == r.high else {"range": [r.low, r.high]}


def _family_free(m: Match) -> bool:
    return m.saddr is None and m.sset is None and m.daddr is None


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
        rule["comment"] = comment.encode()[:_COMMENT_MAX].decode(errors="ignore")
    return {"rule": rule}


def _comment(rule: KernelRule) -> str:
    return " ".join(f"{rule.origin.short} {rule.origin.text}".replace('"', "").split())


def _user_rules(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    emitted: set[tuple[int, Match]] = set()
    for rule in ruleset.rules:
        m = rule.match
        if rule.action == "limit":
            yield from _limit_rules(rule)
            continue
        if _family_free(m):
            # No address in it: one rule serves both families.
            key = (rule.index, Match(family=4, proto=m.proto, iface=m.iface, sport=m.sport,
                                     dport=m.dport))
            if key in emitted:
                continue
            emitted.add(key)
        exprs = match_exprs(m, family_specific=False)
        verdict: Expr = {"accept": None} if rule.action == "allow" else (
            {"drop": None} if rule.action == "deny" else _reject(m.proto))
        yield _rule("inbound", [*exprs, verdict], _comment(rule))


def _limit_rules(rule: KernelRule) -> Iterator[dict[str, Any]]:
    m = rule.match
    # The set statement's `ip saddr` already confines the first rule to one family (nftables
    # adds, and lists without, that dependency); the accept after it must say so itself.
    exprs = match_exprs(m, family_specific=False)
    over = {"set": {"op": "add", "elem": _saddr(m.family),
                    "set": "@" + limit_set_name(rule.index, m.family),
                    "stmt": [{"limit": {"rate": LIMIT_RATE_PER_MINUTE, "burst": LIMIT_BURST,
                                        "per": "minute", "inv": True}}]}}
    yield _rule("inbound", [*exprs, over, _reject(m.proto)], _comment(rule))
    yield _rule("inbound", [*match_exprs(m, family_specific=True), {"accept": None}],
                _comment(rule))


def _forward_rules(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    # Only the first packet of a connection is judged; the rest is Docker's business.
    yield _rule("forward", [_match({"ct": {"key": "state"}}, "new", "!="), {"return": None}])
    for bridge in ruleset.bridges:
        # From a Docker network: container egress or container-to-container, not governed.
        yield _rule("forward", [_match(_meta("iifname"), _iface(bridge)), {"return": None}])
    for bridge in ruleset.bridges:
        yield _rule("forward", [_match(_meta("oifname"), _iface(bridge)),
                                {"jump": {"target": "inbound"}}])


def _inbound_rules(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    if ruleset.protect_direct_routing:
        # Not DNATed means not through a published port: straight to a container's address.
        yield _rule("inbound", [_match({"&": [{"ct": {"key": "status"}}, "dnat"]}, "dnat", "!="),
                                {"drop": None}], "fwsync protect direct-routing")
    if ruleset.protect_localhost_publish:
        yield _rule("inbound", [_match(_ct_orig("ip daddr"), _addr("127.0.0.0/8")),
                                {"drop": None}], "fwsync protect localhost-publish")
        yield _rule("inbound", [_match(_ct_orig("ip6 daddr"), "::1"), {"drop": None}],
                    "fwsync protect localhost-publish")
    yield from _user_rules(ruleset)
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


def _sets(ruleset: Ruleset) -> Iterator[dict[str, Any]]:
    for aset in ruleset.sets:
        yield {"set": {**_t(), "name": set_name(aset.name, aset.family),
                       "type": _set_type(aset.family), "flags": ["interval"],
                       "elem": [_addr(e) for e in aset.elements]}}
    for rule in ruleset.rules:
        if rule.action == "limit":
            yield {"set": {**_t(), "name": limit_set_name(rule.index, rule.match.family),
                           "type": _set_type(rule.match.family), "size": 65535,
                           "flags": ["timeout"], "timeout": LIMIT_TIMEOUT_S}}


def _set_type(family: Family) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


def table_objects(ruleset: Ruleset) -> Batch:
    """Everything the table holds, in creation order (sets before the rules that use them)."""
    objects: Batch = [{"table": {"family": FAMILY, "name": TABLE}}]
    objects.extend(_dedup(_sets(ruleset)))
    objects.append({"chain": {**_t(), "name": "forward", "type": "filter", "hook": "forward",
                              "prio": FORWARD_PRIORITY, "policy": "accept"}})
    objects.append({"chain": {**_t(), "name": "inbound"}})
    objects.extend(_forward_rules(ruleset))
    objects.extend(_inbound_rules(ruleset))
    return objects


def _dedup(items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for item in items:
        key = item["set"]["name"]
        if key not in seen:
            seen.add(key)
            yield item


def replace_batch(objects: Batch, existing_sets: tuple[str, ...] | list[str] = ()) -> Batch:
    """One transaction that empties the table and writes it anew, so a packet sees old or new.
    The table is flushed, not deleted: deleting it would also unregister and re-register the
    forward hook, and connections arriving in that moment were seen to be dropped (the
    atomicity test caught about one in 10k). `flush table` keeps sets, so those go explicitly."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    drop_sets = [{"delete": {"set": {**_t(), "name": name}}} for name in existing_sets]
    return [{"metainfo": {"json_schema_version": 1}}, {"add": table}, {"flush": table},
            *drop_sets, *({"add": obj} for obj in objects)]


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
        stmts = " ".join(_fmt(s) for s in v.get("stmt", []))
        return f"{v['op']} {v['set']} {{ {_fmt(v['elem'])} {stmts} }}"
    if kind == "limit":
        over = "over " if v.get("inv") else ""
        return f"limit rate {over}{v['rate']}/{v.get('per', 'second')} burst {v.get('burst', 0)}"
    return json.dumps(e, sort_keys=True)


def rule_line(rule: dict[str, Any]) -> str:
    text = " ".join(_fmt(e) for e in rule["expr"])
    return text + (f' comment "{rule["comment"]}"' if rule.get("comment") else "")


def objects_state(objects: Batch) -> dict[str, tuple[str, ...]]:
    """Table objects (rendered, or as the kernel lists them) → named objects of lines."""
    state: dict[str, list[str]] = {}
    for obj in objects:
        if "chain" in obj:
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
                elems = sorted(_elem_text(e) for e in s.get("elem", []))
                state[set_key(s["name"], s["type"])] = elems
    return {k: tuple(v) for k, v in state.items()}


def _elem_text(e: Any) -> str:
    if isinstance(e, dict) and "prefix" in e:
        return set_element(f"{e['prefix']['addr']}/{e['prefix']['len']}")
    if isinstance(e, dict) and "elem" in e:
        return _elem_text(e["elem"]["val"])  # an element with options (timeout)
    return str(e)


def render(ruleset: Ruleset) -> dict[str, tuple[str, ...]]:
    return objects_state(table_objects(ruleset))
