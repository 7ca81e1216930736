"""Desired kernel objects vs the ones the kernel holds → a Plan. Pure and backend-neutral.

A backend describes its state as named objects (a chain, a set, the jump into fwsync's chains),
each an ordered tuple of lines in the kernel's own canonical text, so that the same diff serves
every backend and a hand edit in the kernel shows up as a change.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

State = Mapping[str, tuple[str, ...]]
Op = Literal["create", "update", "delete"]

# The one line a read gives for a set it did not list: a big set whose name is the digest of
# content nothing desires any more, next to the set that replaces it (Backend.read). The plan
# deletes it whole, so its elements are not needed to plan or apply, only to print. No kernel
# line looks like it (elements and rules never start with a parenthesis).
NOT_LISTED = "(elements not listed)"


@dataclass(frozen=True)
class Change:
    key: str
    op: Op
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def not_listed(self) -> bool:
        """A set deleted whole whose elements the read did not list (NOT_LISTED)."""
        return self.removed == (NOT_LISTED,)


@dataclass(frozen=True)
class Desired:
    """What a backend is to write: its objects as lines (what the diff compares and people read)
    and, when the lines alone are not what the backend writes, its own encoding of the very same
    objects (nftables: the table's JSON objects). A Plan carries both, so a backend can apply
    any plan it is handed, whoever rendered it, with no memory of its own renders."""

    state: State
    payload: object = None


@dataclass(frozen=True)
class Plan:
    backend: str
    changes: tuple[Change, ...]
    notes: tuple[str, ...] = ()
    desired: State = field(default_factory=dict, compare=False, repr=False)
    payload: object = field(default=None, compare=False, repr=False)  # see Desired
    # When the kernel already holds every desired object: where those objects, as listed,
    # still give another verdict than the policy (fwsync.verify; one line each). Nothing for
    # apply to write, yet not in sync: what fwsync says must be what the kernel does.
    disagreements: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to write (the kernel holds the desired objects)."""
        return not self.changes

    @property
    def in_sync(self) -> bool:
        """Nothing to write, and the kernel's rules give the policy's verdicts."""
        return not self.changes and not self.disagreements

    @property
    def counts(self) -> dict[str, int]:
        return {
            "add": sum(len(c.added) for c in self.changes),
            "remove": sum(len(c.removed) for c in self.changes if not c.not_listed),
            "objects": len(self.changes),
        }


def diff_lines(desired: tuple[str, ...], current: tuple[str, ...]
               ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if _sorted_unique(desired) and _sorted_unique(current):
        # Set contents are kept sorted: their diff is set difference, in linear time even for
        # 100k-element address sets where a sequence matcher would crawl.
        want, have = set(desired), set(current)
        added_set = tuple(x for x in desired if x not in have)
        return added_set, tuple(x for x in current if x not in want)
    added: list[str] = []
    removed: list[str] = []
    matcher = difflib.SequenceMatcher(a=current, b=desired, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed.extend(current[i1:i2])
        if tag in ("replace", "insert"):
            added.extend(desired[j1:j2])
    return tuple(added), tuple(removed)


def _sorted_unique(lines: tuple[str, ...]) -> bool:
    return all(a < b for a, b in itertools.pairwise(lines))


def diff(backend: str, desired: State | Desired, current: State,
         notes: tuple[str, ...] = ()) -> Plan:
    payload = desired.payload if isinstance(desired, Desired) else None
    if isinstance(desired, Desired):
        desired = desired.state
    changes: list[Change] = []
    for key in sorted(desired.keys() | current.keys()):
        want, have = desired.get(key), current.get(key)
        if have is None:
            assert want is not None
            changes.append(Change(key=key, op="create", added=want))
        elif want is None:
            changes.append(Change(key=key, op="delete", removed=have))
        elif want != have:
            added, removed = diff_lines(want, have)
            changes.append(Change(key=key, op="update", added=added, removed=removed))
    return Plan(backend=backend, changes=tuple(changes), notes=notes, desired=dict(desired),
                payload=payload)
