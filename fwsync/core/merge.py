"""Runs of one verdict merged onto source sets: the one step both renderers take. Pure.

Within a run of neighbouring rules of one family with one verdict, their order does not matter
(whichever matches, the verdict is the same), so the rules that differ only in their source
address become one rule on a set of those sources: an allowlist written as 10k rules is one set
lookup instead of a walk through 20k rules (docs/benchmarks.md). A rule of another verdict ends
the run, so `allow A, deny B, allow C` keeps its order; so does a `limit`, which keeps state per
rule. The other family's rules neither end a run nor join it: a connection is of one family and
only meets that family's rules, so each family is merged on its own and a merged rule is of one
family, like every rule it stands for.

The merged rules take the place of the first rule each stands for, so the result keeps the
kernel order of the rules (a rule of index i stays among the rules of index i: a renderer may
still treat one user rule's kernel rules as one). The sets they use are AddrSets like a
define's, under names no define can have (`is_internal`): a backend holds both in one namespace.
Held to the matcher (fwsync.core.matching) by a property test: the merged rules give every
connection the verdict the unmerged ones give.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from fwsync.core.build import FAMILIES, split_cidrs
from fwsync.core.ruleset import AddrSet, Family, KernelRule, Match, Ruleset

# A define's name is [A-Za-z_][A-Za-z0-9_-]* (rules/syntax.py): a `.` is in none of them, and
# nftables and ipset take it in a set's name, list it back as it was, and nft's own text reads it.
INTERNAL_MARK = "."


def is_internal(name: str) -> bool:
    """Whether a set name is fwsync's own (a merged rule's sources), never a define's."""
    return INTERNAL_MARK in name


def internal_name(kind: str, *parts: int) -> str:
    """`src.3.0`: the name of an object fwsync makes for rule 3 (kind, the rule's index, ...)."""
    return INTERNAL_MARK.join([kind, *(str(p) for p in parts)])


@dataclass(frozen=True)
class Merged:
    """What a merged rule stands for, for its comment: the rules from its first to `last`."""

    last: KernelRule
    count: int  # how many user rules


def comment(rule: KernelRule, merged: Merged | None = None) -> str:
    """The kernel comment of a rule: where it comes from (a merged rule: from where to where)."""
    if merged is not None and merged.count > 1:
        return (f"{rule.origin.short} to {merged.last.origin.short}: {merged.count} rules with "
                "one verdict, merged")
    return f"{rule.origin.short} {rule.origin.text}"


@dataclass(frozen=True)
class MergedRules:
    """A Ruleset whose runs are merged (`ruleset`: its rules and its sets, the internal ones
    after the defines'), and what each merged rule stands for."""

    ruleset: Ruleset
    merged: dict[int, Merged]  # position in ruleset.rules → what it stands for

    def comment(self, position: int) -> str:
        return comment(self.ruleset.rules[position], self.merged.get(position))


def _verdict(rule: KernelRule) -> tuple[str, str | None] | None:
    """What a rule does, as far as a run cares; None for a limit (a run of its own)."""
    if rule.action == "limit" or rule.log or rule.audit:
        return None  # a logged rule's lines name it alone (core/logging_rules.prefix)
    return rule.action, (rule.match.proto if rule.action == "reject" else None)  # reset or icmp


def _runs(rules: list[tuple[int, KernelRule]]) -> list[list[tuple[int, KernelRule]]]:
    runs: list[list[tuple[int, KernelRule]]] = []
    last: object = object()
    for pos, rule in rules:
        verdict = _verdict(rule)
        if verdict is None or verdict != last:
            runs.append([])
        runs[-1].append((pos, rule))
        last = verdict
    return runs


def merge_runs(ruleset: Ruleset, families: Iterable[Family] = FAMILIES) -> MergedRules:
    """The ruleset with each run's rules that differ only in their source merged onto one
    internal source set per family. Rules with no source or a define's set stay as they are.
    Only `families`' rules are kept (a backend that renders one family at a time asks for it)."""
    placed: list[tuple[int, KernelRule, Merged | None]] = []
    internal: list[AddrSet] = []
    for family in families:
        names: dict[tuple[str, ...], str] = {}  # a set's elements → its name: one set each
        taken: dict[int, int] = {}
        for run in _runs([(p, r) for p, r in enumerate(ruleset.rules)
                          if r.match.family == family]):
            groups: dict[Match, list[tuple[int, KernelRule]]] = {}
            for pos, rule in run:
                if rule.action == "limit" or rule.match.saddr is None:
                    placed.append((pos, rule, None))
                else:
                    groups.setdefault(replace(rule.match, saddr=None), []).append((pos, rule))
            for match, members in groups.items():
                pos, first = members[0]
                if len(members) == 1:
                    placed.append((pos, first, None))
                    continue
                elements = split_cidrs((r.match.saddr or "" for _, r in members), family)
                name = names.get(elements)
                if name is None:
                    k = taken[first.index] = taken.get(first.index, -1) + 1
                    name = names[elements] = internal_name("src", first.index, k)
                    internal.append(AddrSet(name=name, family=family, elements=elements))
                rule = replace(first, match=replace(match, sset=name), comment=None)
                count = len({r.index for _, r in members})
                placed.append((pos, rule, Merged(last=members[-1][1], count=count)))
    placed.sort(key=lambda item: item[0])
    rules = tuple(rule for _, rule, _ in placed)
    merged = {n: m for n, (_, _, m) in enumerate(placed) if m is not None}
    return MergedRules(replace(ruleset, rules=rules, sets=(*ruleset.sets, *internal)), merged)
