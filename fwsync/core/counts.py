"""Connections decided per rule: the kernel's counters on fwsync's decisions, given back to the
rules they came from. Pure: the backends read (comment, verdict, count) from the kernel
(`Backend.decided`), this module says which rule of the policy each count belongs to.

fwsync's inbound chain sees only a connection's first packet (what is not new returns
earlier), so a decision's packet count is the number of new connections it decided. The
kernel rules say where they come from in their comments (core/merge.comment: `FILE:LINE
TEXT`, a merged run `FILE:LINE to FILE:LINE: N rules ...`, the default `FILE:LINE default
deny`, fwsync's own `fwsync protect ...`). A comment is matched against the policy's own
origins, not parsed: a file's name is whatever its author chose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fwsync.core.kernel_text import comment_text
from fwsync.rules.model import Origin, Policy

# What a kernel rule's last statement does, as status and the metrics say it.
VERDICTS = ("allow", "deny", "reject", "audit")  # audit: what an audited rule would refuse
_OWN = "fwsync "  # fwsync's own rules' comments (protect ...)


@dataclass(frozen=True, slots=True)
class Decided:
    """One kernel rule that decides, as the kernel holds it."""

    comment: str
    verdict: str  # one of VERDICTS, or core/tallies' TALLY_VERDICT
    connections: int
    port: str | None = None  # a tally's port (core/tallies.port_key): `comment` is its decision's


@dataclass(frozen=True, slots=True)
class RuleCount:
    """New connections one rule of the policy (or one of fwsync's protections) decided, with
    one verdict, since fwsync first wrote its kernel rules."""

    # FILE:LINE as status and explain name a rule (the default's too; a merged run: FILE:LINE
    # to FILE:LINE), or `protect NAME` for fwsync's own rules
    origin: str
    text: str  # the rule as written, or what fwsync's own rule does
    verdict: str
    connections: int


def _shorts(policy: Policy) -> list[tuple[str, Origin | None, bool]]:
    """(the comment's start, the origin, is the default): longest first, so that `a.rules:4`
    is not taken for `a.rules:40`'s start (each is followed by a space in a comment)."""
    out: list[tuple[str, Origin | None, bool]] = [
        (comment_text(r.origin.short, 255), r.origin, False) for r in policy.rules]
    if policy.default_origin is not None:
        out.append((comment_text(policy.default_origin.short, 255), policy.default_origin, True))
    return sorted(out, key=lambda s: -len(s[0]))


def rule_counts(policy: Policy, decided: Iterable[Decided]) -> tuple[RuleCount, ...]:
    """Each rule's connections per verdict, in the policy's order (the default last, fwsync's
    own protections after it). A rule that decided nothing yet has a count of 0 for each
    verdict its kernel rules give; a rule with no kernel rules (nothing published matches it)
    is not listed. A comment fwsync cannot place (another version's, cut short) counts under
    its own text."""
    shorts = _shorts(policy)
    totals: dict[tuple[str, str], int] = {}
    texts: dict[str, str] = {}
    order: dict[str, tuple[int, int]] = {}
    for d in decided:
        if d.port is not None:
            continue  # a per-port count: port_counts
        origin, text, rank = _place(d.comment, shorts, policy)
        key = (origin, d.verdict)
        totals[key] = totals.get(key, 0) + d.connections
        texts.setdefault(origin, text)
        order.setdefault(origin, rank)
    keys = sorted(totals, key=lambda k: (order[k[0]], k[0], VERDICTS.index(k[1])
                                         if k[1] in VERDICTS else len(VERDICTS)))
    return tuple(RuleCount(o, texts[o], v, totals[(o, v)]) for o, v in keys)


def port_counts(policy: Policy, decided: Iterable[Decided]) -> dict[tuple[str, str], int]:
    """(origin, port key) → new connections that rule (or the default) decided for that
    published port (core/tallies), placed as rule_counts places a decision."""
    shorts = _shorts(policy)
    out: dict[tuple[str, str], int] = {}
    for d in decided:
        if d.port is None:
            continue
        origin = _place(d.comment, shorts, policy)[0]
        out[(origin, d.port)] = out.get((origin, d.port), 0) + d.connections
    return out


def _place(comment: str, shorts: list[tuple[str, Origin | None, bool]], policy: Policy
           ) -> tuple[str, str, tuple[int, int]]:
    """(origin label, text, sort rank) of a kernel comment."""
    if comment.startswith(_OWN):
        what = comment.removeprefix(_OWN)
        return what, f"fwsync's own rule ({what})", (3, 0)
    for short, origin, default in shorts:
        if origin is None or not comment.startswith(short + " "):
            continue
        rest = comment[len(short) + 1:]
        if default and rest.startswith("default "):
            return str(origin), f"default {policy.default}", (2, 0)
        merged = re.match(r"to (\S+): \d+ rules with one verdict, merged", rest)
        if merged:
            return f"{origin} to {merged.group(1)}", rest[merged.end(1) + 2:], \
                (1, _line_rank(origin, policy))
        return str(origin), origin.text, (1, _line_rank(origin, policy))
    return comment, comment, (4, 0)


def _line_rank(origin: Origin, policy: Policy) -> int:
    for i, rule in enumerate(policy.rules):
        if rule.origin == origin:
            return i
    return len(policy.rules)


def by_origin(counts: Iterable[RuleCount]) -> dict[str, int]:
    """All verdicts of a rule together: what `status` shows beside a port's decision."""
    out: dict[str, int] = {}
    for c in counts:
        out[c.origin] = out.get(c.origin, 0) + c.connections
    return out
