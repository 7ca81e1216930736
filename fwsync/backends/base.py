"""The one small interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from fwsync.core.counts import Decided
from fwsync.core.diff import Desired, Plan, State
from fwsync.core.enforcing import Enforcement
from fwsync.core.ruleset import Ruleset

# A set with fewer elements than this is always listed when the kernel is read (a few ms at
# most): only bigger ones are known by their name (and ipset's count) between full reads.
LIST_BELOW = 1000


class BackendError(Exception):
    """A kernel call failed. The message says what was attempted and what the kernel answered."""


class Backend(Protocol):
    name: str
    # Whether it judges a port docker-proxy serves that was published after the apply
    # (Ruleset.proxy_cgroup; core/build.later_proxy_ports says so where not).
    proxy_catchall: bool

    def detect(self) -> str:
        """Why this backend fits the host (one line for plan/status), or raise BackendError."""
        ...

    def read(self, desired: State | None = None) -> State:
        """fwsync's objects as the kernel holds them now.

        Sets are named by a digest of their content, so with `desired` (what is about to be
        compared with the result) a set that has the name desired's content gives it is the
        same set: it is reported with desired's elements instead of being listed, and reading
        costs the same for 10 entries as for 100k. Where the kernel counts a set's elements
        without listing them (ipset), or a netlink dump can count them cheaply (nftables,
        below nft_counts.COUNT_BELOW elements), a different count makes it be read after all. Sets
        with fewer than LIST_BELOW elements, and sets that match nothing in desired, are read
        in full. `desired=None` reads every element: the full check that also finds an
        element added or removed by hand in a big set."""
        ...

    def decided(self) -> tuple[Decided, ...]:
        """The counters on fwsync's decisions as the kernel holds them (core/counts places
        them): no set's elements are read."""
        ...

    def holds(self) -> bool:
        """Whether fwsync has any object in the kernel (no set's elements are listed)."""
        ...

    def enforcement(self) -> Enforcement:
        """Whether new connections to published ports reach fwsync's rules before anything
        else can accept them, per family (fwsync.core.enforcing decides, from the kernel)."""
        ...

    def render(self, ruleset: Ruleset) -> Desired:
        """The objects the kernel should hold for this ruleset (pure given the detected host)."""
        ...

    def snapshot(self) -> Desired:
        """fwsync's objects as the kernel holds them now, in a form apply() can write back
        (the daemon restores them when it starts on invalid rules and they drift)."""
        ...

    def check(self, plan: Plan) -> None:
        """Let the kernel validate plan.desired without committing it, where it can."""
        ...

    def apply(self, plan: Plan) -> None:
        """Make the kernel hold plan.desired (a transaction per family); on error change nothing.
        Any plan whose desired side came from this backend's render() or snapshot() will do."""
        ...

    def remove(self) -> State:
        """Take out every object fwsync owns (nothing else); return what was removed."""
        ...
