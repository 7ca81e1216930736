"""The inbound chain's counters (nftables_render puts one in each decision): read for status
and the metrics (core/counts), and carried over when apply writes the chain again, so that a
rule's count is what it decided since fwsync first wrote it, not since the last apply. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fwsync.backends.nft_state import rule_line
from fwsync.backends.nft_table import LIMITED_CHAIN, Batch
from fwsync.core.audit import AUDIT_VERDICT
from fwsync.core.counts import Decided
from fwsync.core.tallies import TALLY_VERDICT, parse_tally

COUNTED_CHAIN = "inbound"
_VERDICT = {"accept": "allow", "return": "allow", "drop": "deny", "reject": "reject"}
_DECIDES = ("accept", "return", "drop", "reject", "jump", "goto", "queue")

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
        last = rule["expr"][-1]
        verdict = _VERDICT.get(next(iter(last)) if isinstance(last, dict) else "")
        if isinstance(last, dict) and last.get("jump", {}).get("target") == LIMITED_CHAIN:
            verdict = "reject"  # a limit's logged refusals: the chain logs and rejects
        elif verdict is None and not any(isinstance(e, dict) and next(iter(e), "") in _DECIDES
                                         for e in rule["expr"]):
            # Counted, deciding nothing: a per-port count (core/tallies) or an audited rule
            # (core/audit).
            tally = parse_tally(str(rule.get("comment", "")))
            if tally is not None and counter is not None:
                out.append(Decided(tally[1], TALLY_VERDICT, int(counter.get("packets", 0)),
                                   port=tally[0]))
                continue
            verdict = AUDIT_VERDICT
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
