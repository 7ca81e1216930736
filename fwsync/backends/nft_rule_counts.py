"""The inbound chain's counters (nftables_render puts one in each decision): read for status
and the metrics (core/counts), and carried over when apply writes the chain again, so that a
rule's count is what it decided since fwsync first wrote it, not since the last apply. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fwsync.backends.nft_state import rule_line
from fwsync.backends.nft_table import Batch
from fwsync.core.counts import Decided

COUNTED_CHAIN = "inbound"
_VERDICT = {"accept": "allow", "return": "allow", "drop": "deny", "reject": "reject"}

Counters = dict[str, list[dict[str, int]]]  # a rule's line → its counters, in chain order


def _counter(rule: dict[str, Any]) -> dict[str, int] | None:
    for e in rule.get("expr", []):
        if isinstance(e, dict) and "counter" in e:
            value = e["counter"]
            return value if isinstance(value, dict) else {"packets": 0, "bytes": 0}
    return None


def decided(objects: Iterable[dict[str, Any]]) -> tuple[Decided, ...]:
    """The counted decisions among the table's objects (a terse listing: no set elements)."""
    out = []
    for o in objects:
        rule = o.get("rule")
        if rule is None or rule.get("chain") != COUNTED_CHAIN or not rule.get("expr"):
            continue
        counter = _counter(rule)
        verdict = _VERDICT.get(next(iter(rule["expr"][-1])) if isinstance(
            rule["expr"][-1], dict) else "")
        if counter is not None and verdict is not None:
            out.append(Decided(str(rule.get("comment", "")), verdict,
                               int(counter.get("packets", 0))))
    return tuple(out)


def held_counters(objects: Iterable[dict[str, Any]]) -> Counters:
    held: Counters = {}
    for o in objects:
        rule = o.get("rule")
        if rule is not None and rule.get("chain") == COUNTED_CHAIN \
                and (counter := _counter(rule)) is not None:
            held.setdefault(rule_line(rule), []).append(
                {"packets": int(counter.get("packets", 0)), "bytes": int(counter.get("bytes", 0))})
    return held


def carried(objects: Batch, held: Counters) -> Batch:
    """`objects` with each counted rule starting from the counts of the rule the kernel holds
    with the same line (counters aside), the n-th such rule's for the n-th. New rules start
    from zero."""
    if not held:
        return objects
    used: dict[str, int] = {}
    out: Batch = []
    for o in objects:
        rule = o.get("rule")
        if rule is None or rule.get("chain") != COUNTED_CHAIN or _counter(rule) is None:
            out.append(o)
            continue
        line = rule_line(rule)
        n = used.get(line, 0)
        kept = held.get(line, [])
        if n >= len(kept):
            out.append(o)
            continue
        used[line] = n + 1
        expr = [{"counter": dict(kept[n])} if isinstance(e, dict) and "counter" in e else e
                for e in rule["expr"]]
        out.append({"rule": {**rule, "expr": expr}})
    return out
