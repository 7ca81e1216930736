"""Drift: the kernel no longer holds what fwsync last enforced (someone's `iptables -F
DOCKER-USER`, `ufw reload`, `nft flush ruleset`, a dockerd restart that re-created its chains).

The check is a cheap read-back through the backend — fwsync's own objects and the jump that
makes them reachable — compared with what the last reconcile wrote (its desired state, never
what the kernel read back after it: a bypass read back must stay drift). Only when they differ
does a real reconcile run (with the Docker state already known: drift says nothing about
Docker).
"""

from __future__ import annotations

from dataclasses import dataclass

from fwsync.backends.base import Backend
from fwsync.core.diff import State, diff
from fwsync.rules.model import Policy

# Every this many drift checks, one reads every element of every set (two minutes at the
# default 1 s interval): an nftables set can only be counted by listing it (~1.2 s of CPU for
# 100k elements), so doing that every second would cost more than a core.
FULL_CHECK_EVERY = 120


@dataclass(frozen=True)
class Enforced:
    """What the last good reconcile wrote (what the kernel must hold), and how to write it
    again."""

    backend: Backend
    desired: State
    # The policy it was built from; None when it was found in the kernel at start and the rules
    # on disk were invalid (then it can be restored, but not rebuilt for new containers).
    policy: Policy | None
    # The backend's own encoding of `desired` (Desired.payload), for writing it back when there
    # is no policy to rebuild it from.
    payload: object = None


def drifted(enforced: Enforced, full: bool = False) -> tuple[str, ...]:
    """The kernel objects that differ from what was enforced (empty: no drift).

    The usual check reads fwsync's chains, rules and jumps and its sets' names (and ipset's
    element counts), not the elements of a set whose name is the digest of what was enforced
    (Backend.read): its cost does not grow with the sets. `full` reads every element too,
    which finds an element changed by hand inside such a set (the daemon does it every
    FULL_CHECK_EVERY ticks)."""
    current = enforced.backend.read(None if full else enforced.desired)
    plan = diff(enforced.backend.name, enforced.desired, current)
    return tuple(c.key for c in plan.changes)
