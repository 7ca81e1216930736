"""When each rule last decided a connection: the daemon samples the kernel's counts (core/counts)
now and then, and a count that grew since the last sample means the rule was used in between.
`status` shows it, and names the rules that have decided nothing for IDLE_DAYS as a hint (an
allow nobody uses is an opening nobody needs). Pure: the samples come in, the file is the
daemon's (observe/activity_file.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fwsync.core.counts import RuleCount

IDLE_DAYS = 30
DAY = 86400.0

Key = tuple[str, str]  # (origin, verdict), as RuleCount has them


@dataclass(frozen=True, slots=True)
class Activity:
    connections: int  # the count at the last sample
    since: float  # Unix time of the first sample that saw this counter (or its reset)
    last: float | None  # the last sample at which it had grown; None: not since `since`


def observe(previous: Mapping[Key, Activity], counts: Iterable[RuleCount], now: float
            ) -> dict[Key, Activity]:
    """The activity after a sample taken at `now`. A counter that went down was written anew
    (the rule was edited, the host rebooted, fwsync removed and applied again): it starts
    over. Rules the sample does not hold are forgotten."""
    out: dict[Key, Activity] = {}
    for c in counts:
        key = (c.origin, c.verdict)
        before = previous.get(key)
        if before is None or c.connections < before.connections:
            out[key] = Activity(c.connections, now, None)
        elif c.connections > before.connections:
            out[key] = Activity(c.connections, before.since, now)
        else:
            out[key] = before
    return out


def last_used(activity: Mapping[Key, Activity], origin: str) -> float | None:
    """The last sample at which any verdict of the rule had grown."""
    times = [a.last for (o, _v), a in activity.items() if o == origin and a.last is not None]
    return max(times) if times else None


def idle(activity: Mapping[Key, Activity], now: float, days: float = IDLE_DAYS
         ) -> list[tuple[str, float]]:
    """(origin, since when) of the rules that have decided nothing for `days`, as far as the
    samples know: none of its counters grew in that time, and they have been watched that
    long. A counter first seen above zero had been used before sampling began: it counts as
    used then."""
    by_origin: dict[str, list[Activity]] = {}
    for (origin, _verdict), a in activity.items():
        by_origin.setdefault(origin, []).append(a)
    out = []
    for origin, acts in by_origin.items():
        watched = min(a.since for a in acts)
        used = [a.last if a.last is not None else a.since for a in acts
                if a.last is not None or a.connections > 0]
        quiet_since = max(used) if used else watched
        if now - quiet_since >= days * DAY:
            out.append((origin, quiet_since))
    return sorted(out)
