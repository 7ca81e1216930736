"""How triggers become reconciles: bursts coalesce, a lone event is served at once."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwsync.daemon.coalesce import Batch, Coalescer, Trigger

pytestmark = pytest.mark.unit


def event(at: float, reason: str = "start web", lazy: bool = False) -> Trigger:
    return Trigger(source="docker", reason=reason, at=at, wall=1000 + at, lazy=lazy)


def run(coalescer: Coalescer, triggers: list[Trigger], duration: float = 0.05,
        until: float = 60.0) -> list[tuple[float, Batch]]:
    """Simulate the service loop: triggers arrive at their times, a reconcile takes
    `duration` (triggers arriving meanwhile wait), batches are taken when due."""
    todo = sorted(triggers, key=lambda t: t.at)
    now, served = 0.0, []
    while now < until and (todo or coalescer.pending):
        while todo and todo[0].at <= now:
            coalescer.add(todo.pop(0))
        batch = coalescer.take(now)
        if batch is not None:
            served.append((now, batch))
            now += duration
            continue
        due = coalescer.due()
        nxt = min([x for x in (due, todo[0].at if todo else None) if x is not None])
        now = max(now + 1e-6, nxt)
    return served


def test_a_lone_event_is_served_after_the_settle_time_only() -> None:
    c = Coalescer()
    c.add(event(10.0))
    assert c.take(10.0) is None
    batch = c.take(10.0 + c.settle)
    assert batch is not None and [t.reason for t in batch.triggers] == ["start web"]
    assert c.due() is None and c.take(99.0) is None


def _urgent(batch: Batch) -> bool:
    return any(t.is_event and not t.lazy for t in batch.triggers)


def _assert_spaced(served: list[tuple[float, Batch]], min_interval: float) -> None:
    """The promise: reconciles that serve urgent events start min_interval apart, and one that
    serves lazy events alone starts min_interval after the reconcile before it."""
    urgent = [at for at, b in served if _urgent(b)]
    assert all(b - a >= min_interval - 1e-9 for a, b in itertools.pairwise(urgent))
    for (a, _), (b, batch) in itertools.pairwise(served):
        if not _urgent(batch):
            assert b - a >= min_interval - 1e-9


def test_a_burst_of_thirty_starts_is_a_handful_of_reconciles() -> None:
    # compose up: 30 services, create+connect+start each, spread over 3 s.
    triggers = []
    for i in range(30):
        t = i * 0.1
        triggers += [event(t, f"network connect bridge c{i}", lazy=True),
                     event(t + 0.05, f"start svc-{i}")]
    served = run(Coalescer(), triggers)
    assert 2 <= len(served) <= 5
    reasons = [t.reason for _, b in served for t in b.triggers]
    assert sorted(reasons) == sorted(t.reason for t in triggers), "nothing is lost"
    starts = [at for at, _ in served]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(starts))


def test_network_connect_waits_for_the_start_it_precedes() -> None:
    # docker run: connect at t, start ~200 ms later: one reconcile, at the start.
    served = run(Coalescer(), [event(0.0, "network connect bridge x", lazy=True),
                               event(0.2, "start x")])
    assert len(served) == 1
    at, batch = served[0]
    assert at == pytest.approx(0.2 + Coalescer().settle)
    assert batch.first_event is not None and batch.first_event.reason == "start x"


def test_a_start_long_after_its_connect_is_not_held_back_by_it() -> None:
    # A busy machine: the connect is served alone after lazy_delay, the start comes 0.3 s
    # later and is served at once, not a second after the connect's reconcile.
    c = Coalescer()
    served = run(c, [event(0.0, "network connect bridge x", lazy=True), event(0.8, "start x")])
    assert [(round(at, 3), [t.reason for t in b.triggers]) for at, b in served] == [
        (c.lazy_delay, ["network connect bridge x"]), (0.8 + c.settle, ["start x"])]


def test_a_start_right_after_another_start_waits_for_the_interval() -> None:
    c = Coalescer()
    served = run(c, [event(0.0, "start a"), event(0.3, "start b")])
    assert [round(at, 3) for at, _ in served] == [c.settle, c.settle + c.min_interval]


def test_a_lone_lazy_event_is_still_served() -> None:
    served = run(Coalescer(), [event(0.0, "destroy x", lazy=True)])
    assert len(served) == 1 and served[0][0] == pytest.approx(Coalescer().lazy_delay)


def test_rules_and_drift_are_not_held_back_by_the_event_rate_limit() -> None:
    c = Coalescer()
    c.add(event(0.0))
    assert c.take(0.01) is not None
    c.add(Trigger(source="drift", reason="ipv4 jump", at=0.1))
    c.add(event(0.1, "die web"))
    batch = c.take(0.1 + c.settle)
    assert batch is not None, "drift is served at once, and takes the pending event along"
    assert batch.sources == ("drift", "docker")
    assert batch.needs_docker, "the event needs Docker re-read"


def test_drift_alone_does_not_ask_docker() -> None:
    assert not Batch((Trigger(source="drift", reason="ipv4 jump", at=0.0),)).needs_docker
    assert Batch((Trigger(source="rules", reason="x", at=0.0),)).needs_docker


def test_only_event_batches_start_the_rate_limit() -> None:
    c = Coalescer()
    c.add(Trigger(source="reconnect", reason="connected", at=0.0))
    assert c.take(0.01) is not None
    c.add(event(0.1))
    assert c.take(0.1 + c.settle) is not None, "a start right after a re-list is not delayed"


def test_summary_names_each_trigger_once() -> None:
    b = Batch(tuple(event(i * 0.01, f"start s{i % 3}") for i in range(9)))
    assert b.summary() == "docker: start s0, docker: start s1, docker: start s2"
    long = Batch(tuple(event(i, f"start s{i}") for i in range(8)))
    assert long.summary().endswith("(+3 more)")


@given(st.lists(st.tuples(st.floats(0, 20), st.booleans()), min_size=1, max_size=200))
def test_every_trigger_is_served_exactly_once_and_event_batches_are_spaced(
        items: list[tuple[float, bool]]) -> None:
    triggers = [event(at, f"e{i}", lazy) for i, (at, lazy) in enumerate(items)]
    c = Coalescer()
    served = run(c, triggers, until=1000)
    reasons = [t.reason for _, b in served for t in b.triggers]
    assert sorted(reasons) == sorted(t.reason for t in triggers)
    for at, batch in served:
        assert all(t.at <= at for t in batch.triggers), "never served before it arrived"
    _assert_spaced(served, c.min_interval)
    # Bounded delay: an urgent event waits at most min_interval + one reconcile.
    for at, batch in served:
        for t in batch.triggers:
            limit = (c.lazy_delay if t.lazy else c.settle) + c.min_interval + 0.05
            assert at - t.at <= limit + 1e-6
