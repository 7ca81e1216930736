"""Triggers and how bursts of them become few reconciles. Pure: the clock is passed in.

A trigger only says that something may have changed. What matters is *when* to reconcile:

- the first trigger after a quiet spell is served at once (after `settle`, a few ms, so that
  events Docker sends together, e.g. `die` + `disconnect`, land in one batch);
- while Docker events keep coming, the reconciles that serve them are at least `min_interval`
  apart, so a `docker compose up` of 30 services costs one reconcile per `min_interval` of the
  burst, not 30;
- lazy triggers (events that never change what is published on their own, such as `network
  connect`, which precedes every `start`) wait `lazy_delay` and are usually absorbed by the
  reconcile of the event they come with. When one is served alone (on a busy machine a
  `start` can come more than `lazy_delay` after its `connect`), that reconcile is `min_interval`
  after the last one that served events, but it does not hold back the urgent event that
  follows it: a `start` waits only for the last reconcile that served an urgent event (a
  `start` after a quiet spell waited up to a second behind its own `connect`);
- triggers that are not Docker events (rules edited, SIGHUP, drift, a retry) are never held back
  by `min_interval`: they are rare and the user is waiting for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# "swarm": a Docker event about the swarm (a service created, updated or removed; the ingress or
# docker_gwbridge network made or gone), or a worker's mesh ports changed: served like any Docker
# event, and named apart in the log.
Source = Literal["startup", "docker", "reconnect", "rules", "signal", "drift", "resync", "retry",
                 "swarm"]

SETTLE = 0.01
LAZY_DELAY = 0.5
MIN_INTERVAL = 1.0


@dataclass(frozen=True)
class Trigger:
    source: Source
    reason: str  # for the log: "start web-1", "SIGHUP", "ipv4 jump", ...
    at: float  # time.monotonic() when it was received
    wall: float = 0.0  # time.time() when it was received (logged, for event-to-enforced)
    lazy: bool = False
    # Found by a check that listed every set element (drift.py): the reconcile it triggers must
    # read as deeply, or it finds nothing and leaves a same-count hand edit in place.
    full: bool = False
    seen_by: str | None = None  # for drift: "tick" or "netlink" (daemon/nft_watch.py)

    @property
    def is_event(self) -> bool:
        return self.source in ("docker", "swarm")

    def label(self) -> str:
        return f"{self.source}: {self.reason}" if self.reason else self.source


@dataclass(frozen=True)
class Batch:
    triggers: tuple[Trigger, ...]

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(dict.fromkeys(t.source for t in self.triggers))

    @property
    def needs_docker(self) -> bool:
        """Drift alone changes nothing in Docker: the last observed state is reused."""
        return any(t.source != "drift" for t in self.triggers)

    @property
    def full(self) -> bool:
        """Read every set element: a trigger was found by a check that did."""
        return any(t.full for t in self.triggers)

    @property
    def first_event(self) -> Trigger | None:
        """The oldest Docker event served by this batch, for event-to-enforced latency. Lazy
        events are held back on purpose and are measured only when nothing else came."""
        events = [t for t in self.triggers if t.is_event]
        urgent = [t for t in events if not t.lazy] or events
        return min(urgent, key=lambda t: t.at) if urgent else None

    def summary(self, limit: int = 5) -> str:
        labels = list(dict.fromkeys(t.label() for t in self.triggers))
        more = f" (+{len(labels) - limit} more)" if len(labels) > limit else ""
        return ", ".join(labels[:limit]) + more


@dataclass
class Coalescer:
    settle: float = SETTLE
    lazy_delay: float = LAZY_DELAY
    min_interval: float = MIN_INTERVAL
    pending: list[Trigger] = field(default_factory=list)
    last_start: float | None = None  # of the last batch that served Docker events
    last_urgent: float | None = None  # of the last batch that served an urgent one

    def add(self, trigger: Trigger) -> None:
        self.pending.append(trigger)

    def _due_one(self, t: Trigger) -> float:
        due = t.at + (self.lazy_delay if t.lazy else self.settle)
        since = self.last_start if t.lazy else self.last_urgent
        if t.is_event and since is not None:
            due = max(due, since + self.min_interval)
        return due

    def due(self) -> float | None:
        """When the pending triggers should be served, or None when nothing is pending."""
        return min((self._due_one(t) for t in self.pending), default=None)

    def take(self, now: float) -> Batch | None:
        """Everything pending, as one batch, once it is due."""
        due = self.due()
        if due is None or now < due:
            return None
        batch = Batch(tuple(self.pending))
        self.pending.clear()
        if any(t.is_event for t in batch.triggers):
            self.last_start = now
        if any(t.is_event and not t.lazy for t in batch.triggers):
            self.last_urgent = now
        return batch
