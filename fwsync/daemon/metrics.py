"""Prometheus metrics (prometheus_client), served on --metrics-address when given.

A registry of the daemon's own (not the library's global one), with the process collector so
RSS and CPU time are there too. The fleet's alerts (monitoring/fwsync-alerts.yml) are written
against these names; tests/unit/test_alert_rules.py holds the two to each other.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from fwsync.core.audit import AUDIT_VERDICT
from fwsync.core.counts import RuleCount
from fwsync.core.ruleset import Family
from fwsync.daemon.loop import Outcome

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FAMILIES: tuple[Family, ...] = (4, 6)


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (all addresses) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT, [ADDRESS]:PORT or :PORT")
    host = host.strip("[]") or "0.0.0.0"
    if host != "localhost":
        ipaddress.ip_address(host)  # ValueError for a typo, not a DNS lookup at start
    return host, int(port)


log = logging.getLogger("fwsync.daemon")


class RuleCounts(Collector):
    """The kernel's counters on fwsync's decisions (core/counts), read when Prometheus scrapes:
    no tick pays for them, and what is exported is what the kernel holds at that moment. The
    rules' kernel counters survive applies (the backends carry them over), so these are
    counters in Prometheus' sense too; a restart of the host, or `fwsync remove`, resets them,
    which rate() takes for a counter reset."""

    def __init__(self, source: Callable[[], tuple[RuleCount, ...]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        per_rule = CounterMetricFamily(
            "fwsync_rule_connections", "New connections each rule decided, by verdict (the "
            "kernel's counters on fwsync's rules; origin: FILE:LINE, or fwsync's own `protect "
            "NAME`).", labels=["origin", "verdict"])
        denied = CounterMetricFamily(
            "fwsync_denied_connections", "New connections fwsync's rules dropped or rejected, "
            "all rules together (a dropped client's retried SYN counts again).")
        try:
            counts = self._source()
        except Exception as exc:  # a scrape must not fail for it; the series are left out
            log.warning("rule counts", extra={"fields": {"error": str(exc)}})
            return
        for c in counts:
            per_rule.add_metric([c.origin, c.verdict], c.connections)
        # An audited rule's count is what it would have refused: nothing was (core/audit).
        denied.add_metric([], sum(c.connections for c in counts
                                  if c.verdict not in ("allow", AUDIT_VERDICT)))
        yield per_rule
        yield denied


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.reconciles = Counter("fwsync_reconciles", "Reconciles run, by result.", ["result"],
                                  registry=r)
        self.triggers = Counter("fwsync_triggers", "Triggers received, by source (several "
                                "coalesce into one reconcile).", ["source"], registry=r)
        self.duration = Histogram("fwsync_reconcile_duration_seconds",
                                  "Time one reconcile took.", buckets=_LATENCY_BUCKETS,
                                  registry=r)
        self.latency = Histogram("fwsync_event_to_enforced_seconds",
                                 "From a Docker event received to the kernel updated.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.drift_repairs = Counter("fwsync_drift_repairs",
                                     "Reconciles that repaired drift in the kernel.", registry=r)
        self.errors = Counter("fwsync_errors", "Reconciles that failed, by kind.", ["kind"],
                              registry=r)
        self.ports = Gauge("fwsync_governed_published_ports",
                           "Ports Docker publishes that fwsync's rules govern.", registry=r)
        self.rules_valid = Gauge("fwsync_rules_valid",
                                 "1 if the rules on disk are valid, 0 if the last good ones "
                                 "are enforced instead.", registry=r)
        self.docker_connected = Gauge("fwsync_docker_connected",
                                      "1 while Docker's event stream is followed.", registry=r)
        self.last = Gauge("fwsync_last_reconcile_timestamp_seconds",
                          "When the last reconcile ended (Unix time).", registry=r)
        self.enforcing = Gauge("fwsync_enforcing",
                               "1 if the kernel, read back after the last reconcile, sends new "
                               "connections to fwsync's rules first and they give the policy's "
                               "verdicts (status' Enforcing), by address family.", ["family"],
                               registry=r)
        for family in FAMILIES:  # 0 until a reconcile says otherwise: a stuck start alerts
            self.enforcing.labels(str(family)).set(0)
        self.in_sync = Gauge("fwsync_in_sync",
                             "1 if the kernel holds what the rules on disk say (status' in "
                             "sync), read back after the last reconcile.", registry=r)
        self.rules_info = Gauge("fwsync_rules_info",
                                "The rules enforced: sha256 of their files as read, and the git "
                                "commit of the repository they are in (empty outside one).",
                                ["digest", "commit"], registry=r)
        self.logged = Counter("fwsync_logged_decisions", "Decisions the kernel logged to "
                              "fwsync's NFLOG group and the daemon wrote (after the kernel's "
                              "rate limits), by verdict.", ["verdict"], registry=r)
        self._rules: tuple[str, str] | None = None
        self._server: Any = None

    def counts_from(self, source: Callable[[], tuple[RuleCount, ...]]) -> None:
        """Export the per-rule counts (fwsync_rule_connections_total) that `source` reads."""
        self.registry.register(RuleCounts(source))

    def trigger(self, source: str) -> None:
        self.triggers.labels(source).inc()

    def record(self, outcome: Outcome) -> None:
        self.reconciles.labels(outcome.result).inc()
        self.duration.observe(outcome.duration)
        self.last.set(outcome.started + outcome.duration)
        if outcome.event_latency is not None:
            self.latency.observe(outcome.event_latency)
        if outcome.drift:
            self.drift_repairs.inc()
        if outcome.result == "error":
            self.errors.labels("reconcile").inc()
        elif outcome.result == "invalid-rules":
            self.errors.labels("rules").inc()
        if outcome.ports is not None:
            self.ports.set(outcome.ports)
        if outcome.result != "error":
            self.rules_valid.set(0 if outcome.result == "invalid-rules" else 1)
        reach = outcome.enforcement
        for family in FAMILIES:
            self.enforcing.labels(str(family)).set(
                int(reach is not None and reach.enforcing_in(family)))
        self.in_sync.set(int(outcome.in_sync))
        if outcome.rules_digest is not None:
            self._set_rules(outcome.rules_digest, outcome.rules_commit)

    def drifted(self) -> None:
        """A drift check found the kernel changed: out of sync until a reconcile reads back
        the repair (the check's own answer; nothing more is read)."""
        self.in_sync.set(0)

    def _set_rules(self, digest: str, commit: str) -> None:
        """One series at a time: the old digest's would otherwise stay at 1, and a fleet's
        count of digests would see this host twice."""
        if (digest, commit) == self._rules:
            return
        self.rules_info.clear()
        self.rules_info.labels(digest, commit).set(1)
        self._rules = (digest, commit)

    def serve(self, address: str) -> tuple[str, int]:
        host, port = parse_address(address)
        self._server, _thread = start_http_server(port, host, registry=self.registry)
        bound: tuple[str, int] = self._server.server_address[:2]
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
