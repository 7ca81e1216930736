"""Audit (issue 21): a rule written `audit deny|reject|limit ...`, and every refusal of a policy
in `mode audit` (its default's too), decides nothing. What it would refuse is counted (verdict
`audit` in status and the metrics) and logged (`would-deny`, `would-reject`, `would-limit` in
`fwsync log`), and the connection goes on to the next rule, as if the rule were not there.
Pure.

An audited rule is never a decision anywhere in fwsync's answers (the matcher passes it by:
core/matching.candidates), so status, explain and doctor say what the kernel does; they name
the audited rules beside it. A policy with anything audited is not enforced, and the enforcing
predicate says so from the kernel's own rules (audited_in_kernel).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from fwsync.core.ruleset import Ruleset
from fwsync.rules.model import Action, DefaultAction, Policy, audited

__all__ = ["AUDIT_VERDICT", "audited", "audited_in_kernel", "audited_names", "default_audited",
           "enforced_default", "is_would", "would"]

AUDIT_VERDICT = "audit"  # what an audited rule's counted connections are, in status and metrics
_WOULD = "would-"
# A log prefix of an audited rule, as both backends list it (core/logging_rules.prefix).
_AUDITED_PREFIX = re.compile(r'prefix "fwsync \S+ (\d+|d) would-(\w+)"')


def default_audited(policy: Policy) -> bool:
    return policy.mode == "audit" and policy.default != "allow"


def enforced_default(policy: Policy) -> DefaultAction:
    """What the default does in the kernel: an audited refusal lets the connection on."""
    return "allow" if default_audited(policy) else policy.default


def would(action: Action | str) -> str:
    """The log prefix's action (and `fwsync log`'s verdict) for what an audited rule saw."""
    return f"{_WOULD}{action}"


def is_would(verdict: str) -> bool:
    return verdict.startswith(_WOULD)


def audits_anything(policy: Policy) -> bool:
    return default_audited(policy) or any(audited(policy, r) for r in policy.rules)


def audited_in_kernel(state: Mapping[str, Iterable[str]]) -> tuple[tuple[int | None, str], ...]:
    """(rule index, or None for the default; the action it would take) of each audited rule
    the kernel holds, from the log prefixes of fwsync's objects as the backend lists them."""
    found: dict[tuple[int | None, str], None] = {}
    for lines in state.values():
        for line in lines:
            for where, action in _AUDITED_PREFIX.findall(line):
                found[(None if where == "d" else int(where), action)] = None
    return tuple(found)


def audited_names(ruleset: Ruleset, held: Iterable[tuple[int | None, str]]) -> tuple[str, ...]:
    """audited_in_kernel's findings named as people read them: `FILE:LINE would deny`, the
    default by its own line; a rule index this ruleset does not know, by its number."""
    origins = {r.index: str(r.origin) for r in ruleset.rules}
    default = str(ruleset.default_origin) if ruleset.default_origin else "the default"
    return tuple(f"{default if i is None else origins.get(i, f'rule {i + 1}')} would {a}"
                 for i, a in held)


def audit_problem(held: Iterable[str]) -> str:
    """The enforcing predicate's problem line for audited rules the kernel holds."""
    return (f"audited, not enforced: {', '.join(held)} (counted and logged, nothing refused "
            "by them)")
