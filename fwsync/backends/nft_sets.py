"""The sets of fwsync's nftables table: their names, the kernel sets that hold an address set,
the limits' meters, and the digest of its content that ends every set's name. Pure.

Apart from the rules because the names are read back too: the backend knows a big set between
full reads by the digest in its name (content_base, replaced_by), and the transactions keep a
set whose name has not changed (set_names).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fwsync.backends.base import LIST_BELOW
from fwsync.backends.nft_table import FAMILY, TABLE, Batch, in_table
from fwsync.core.logging_rules import LOG_SET_BASE, PER_SOURCE_FORGET
from fwsync.core.merge import internal_name
from fwsync.core.ruleset import Family, Ruleset
from fwsync.rules.model import PortRange


def set_name(name: str, family: Family) -> str:
    return f"{name}_v{family}"


LIMIT_METER_BASE = internal_name("limit", 0)[:-1]  # `limit.`: every limit's meter is named so


def limit_set_name(index: int, family: Family) -> str:
    """A limit's meter: in fwsync's own namespace of names (core/merge), which no define's
    name enters, as the merged rules' source sets and the port sets are."""
    return set_name(internal_name("limit", index), family)


def limit_seen_name(index: int, family: Family) -> str:
    """The sources a limit holds a bucket for: `capacity` of them at most (fwsync's own
    namespace of names, as limit_set_name)."""
    return set_name(internal_name("seen", index), family)


HOSTS_SUFFIX = "_h"  # the part of an address set that holds single addresses
Parts = dict[str, list[str]]  # an address set's name → the kernel sets that hold it


def _set_elem(cidr: str) -> Any:
    """An address as nftables lists it (as the rules' _addr), for a set element, which is
    already canonical (`str` of a collapsed network): split, not parsed, since a set may hold
    100k of them."""
    addr, _, plen = cidr.partition("/")
    if not plen or int(plen) == (128 if ":" in addr else 32):
        return addr
    return {"prefix": {"addr": addr, "len": int(plen)}}


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
        out.append({"set": {**in_table(), "name": base + HOSTS_SUFFIX, "type": _set_type(family),
                            "elem": hosts}})
    if nets or not hosts:
        out.append({"set": {**in_table(), "name": base, "type": _set_type(family),
                            "flags": ["interval"], "elem": nets}})
    return out


def _set_type(family: Family) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


def log_set_name(family: Family) -> str:
    """The log's per-source buckets (core/logging_rules): one set per family for all of
    fwsync's log rules, as iptables' `fwsync-log` hashlimit table is one."""
    return set_name(internal_name(LOG_SET_BASE.rstrip("."), 0), family)


def logs(ruleset: Ruleset) -> bool:
    return ruleset.log_default or ruleset.audit_default is not None or any(
        r.log or r.log_refused or r.audit for r in ruleset.rules)


def ruleset_sets(ruleset: Ruleset, parts: Parts) -> Iterator[dict[str, Any]]:
    """The address sets of a ruleset, each in its parts (recorded in `parts`), and the sets of
    its limits; the port sets are made with the rules that use them (port_set)."""
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
            yield {"set": {**in_table(), "name": name, "type": _set_type(family), "size": size,
                           "flags": ["timeout"], "timeout": limit.forget_after}}
    if logs(ruleset):
        for family in (4, 6):
            yield {"set": {**in_table(), "name": log_set_name(family), "type": _set_type(family),
                           "size": limit.capacity, "flags": ["timeout"],
                           "timeout": PER_SOURCE_FORGET}}


def _pr(p: PortRange) -> tuple[int, int]:
    return (p.low, p.high)


def port_set(name: str, ports: list[PortRange]) -> dict[str, Any]:
    """The destination ports of one rule, as one set."""
    return {"set": {**in_table(), "name": name, "type": "inet_service",
                    "flags": ["interval"], "elem": _port_elements(ports)}}


def _port_elements(ports: list[PortRange]) -> list[Any]:
    """Sorted, overlaps and neighbours merged: an interval set refuses overlapping elements."""
    merged: list[list[int]] = []
    for p in sorted(ports, key=_pr):
        if merged and p.low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], p.high)
        else:
            merged.append([p.low, p.high])
    return [lo if lo == hi else {"range": [lo, hi]} for lo, hi in merged]


def content_name(definition: dict[str, Any]) -> str:
    """A set's name with a digest of its content: an unchanged set keeps its name (an apply
    leaves it alone), a changed one is a new set."""
    content = json.dumps({k: v for k, v in definition.items() if k != "name"}, sort_keys=True)
    return f"{definition['name']}_{hashlib.sha256(content.encode()).hexdigest()[:8]}"


def content_base(s: dict[str, Any]) -> tuple[str, str] | None:
    """(the name without its content digest, the type) of a set: what a set rendered from the
    same define (or the same merged rule) keeps when its content changes. None for a name
    content_name did not make."""
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


def distinct_names(items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
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
