"""The daemon as a service: one asyncio loop that gathers triggers, coalesces them and runs
`Reconciler.reconcile` in a single worker thread (so kernel work never overlaps), plus the
things around it — signals, sd_notify readiness and watchdog, metrics, the state file.

Threads: the loop (this module), the reconcile worker, Docker's event stream (a blocking HTTP
read), nf_tables' change announcements (nft_watch), watchfiles' inotify reader, and the metrics
HTTP server. Only the loop touches the coalescer; the others hand triggers over with
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from fwsync.core.activity import observe
from fwsync.core.counts import RuleCount
from fwsync.core.logging_rules import LOG_GROUP
from fwsync.daemon.coalesce import Batch, Coalescer, Source, Trigger
from fwsync.daemon.decisions import DecisionFile, decision_of, ufw_line
from fwsync.daemon.docker_events import DockerEventWatcher
from fwsync.daemon.loop import Outcome, Reconciler
from fwsync.daemon.memory import release_memory
from fwsync.daemon.metrics import Metrics
from fwsync.daemon.nft_watch import Change, NftWatcher
from fwsync.daemon.notify import sd_notify, status_line, watchdog_interval
from fwsync.daemon.rules_watch import watch_rules
from fwsync.daemon.state import write_state
from fwsync.observe.activity_file import read_activity, write_activity
from fwsync.observe.nflog import NflogReader
from fwsync.reconcile import rule_counts_now, select_backend

log = logging.getLogger("fwsync.daemon")
T = TypeVar("T")

RETRY_FIRST = 1.0
RETRY_MAX = 30.0
RESYNC_INTERVAL = 300.0  # re-list Docker now and then even if no event said so
ACTIVITY_INTERVAL = 60.0


@dataclass(frozen=True)
class DaemonConfig:
    rules: Path
    backend: str = "auto"
    drift_interval: float = 1.0
    metrics_address: str | None = None
    resync_interval: float = RESYNC_INTERVAL
    # How often each rule's count is sampled for `status`' "last used" (core/activity): the
    # time it says is this coarse. FWSYNC_ACTIVITY_INTERVAL sets it (the tests' short one).
    activity_interval: float = field(default_factory=lambda: _seconds(
        os.environ.get("FWSYNC_ACTIVITY_INTERVAL"), ACTIVITY_INTERVAL))


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text or default)
    except ValueError:
        return default
    return value if 0.1 <= value < float("inf") else default


class Daemon:
    def _rule_counts(self) -> tuple[RuleCount, ...]:
        """The enforced policy's counts, as `status` reads them (reconcile.rule_counts_now),
        through a backend of the scrape's own: the reconciler's is its worker's alone."""
        enforced = self.reconciler.enforced
        if enforced is None or enforced.policy is None:
            return ()
        return rule_counts_now(select_backend(enforced.backend.name), enforced.policy)

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.reconciler = Reconciler(config.rules, config.backend)
        self.coalescer = Coalescer()
        self.metrics = Metrics()
        self.metrics.counts_from(self._rule_counts)
        self._nflog: NflogReader | None = None
        self._decisions = DecisionFile()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self.watcher = DockerEventWatcher(self._from_thread, on_state=self._docker_state)
        self.nft_watcher = NftWatcher(self._nft_from_thread)
        self._nft_pending: Change | None = None  # heard, not yet checked (a burst is one)
        self._nft_task: asyncio.Task[None] | None = None
        self.ready = False
        self.started = time.time()
        self.reconciles = 0
        self.drift_repairs = 0
        self.last_drift: float | None = None
        self.last: Outcome | None = None
        self.stopped: float | None = None
        self._retry_delay = RETRY_FIRST
        self._retry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    # -- triggers -------------------------------------------------------------------------

    def trigger(self, trigger: Trigger) -> None:
        """Called on the loop only."""
        self.metrics.trigger(trigger.source)
        self.coalescer.add(trigger)
        self._wake.set()

    def _now(self, source: Source, reason: str) -> None:
        self.trigger(Trigger(source=source, reason=reason, at=time.monotonic(), wall=time.time()))

    def _rules_event(self, trigger: Trigger) -> None:
        """A file event for what the last reconcile already read (the drift tick's fingerprint
        saw it first, or an editor touched without changing) is no news."""
        if self.reconciler.rules_changed():
            self.trigger(trigger)

    def _from_thread(self, trigger: Trigger) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: shutting down
                loop.call_soon_threadsafe(self.trigger, trigger)

    def _nft_from_thread(self, change: Change) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._nft_changed, change)

    def _nft_changed(self, change: Change) -> None:
        """Called on the loop. Changes heard while a check runs make one more check after it
        (coalesced: the earliest time, and full if any asked for it), not one each."""
        pending = self._nft_pending
        if pending is not None:
            change = replace(pending, elements=pending.elements or change.elements,
                             own=pending.own or change.own, lost=pending.lost or change.lost)
        self._nft_pending = change
        if self._nft_task is None or self._nft_task.done():
            self._nft_task = self._task(self._nft_checks(), "nft-check")

    async def _nft_checks(self) -> None:
        while self._nft_pending is not None and not self._stop.is_set():
            change, self._nft_pending = self._nft_pending, None
            outcome = await self._in_worker(self._check_and_repair, change)
            if outcome is not None:
                self.metrics.trigger("drift")
                self._after(outcome)

    def _check_and_repair(self, change: Change) -> Outcome | None:
        """On the worker: the repair of what a change of another process did, at once (no hop
        back to the loop and through the coalescer: the repair is what is urgent). A change
        of fwsync's own objects is drift: the reconcile's read and diff are the check. A
        change of a chain fwsync only jumps from (Docker edits those too) is checked first,
        at the depth the change asks for."""
        if self.reconciler.enforced is None:
            return None  # nothing enforced yet to drift from: the first reconcile is pending
        fields: dict[str, Any] = {"full": change.elements, "detected_by": "netlink",
                                  "writer_pid": change.pid}
        if change.own:
            reason = f"netlink: fwsync's objects changed by pid {change.pid}"
        else:
            try:
                keys = self.reconciler.check_drift(full=change.elements)
            except Exception:  # a bug: say so; the tick keeps checking
                log.exception("drift check failed unexpectedly")
                return None
            if not keys:
                return None
            self.metrics.drifted()
            reason = ", ".join(keys)
            log.warning("drift", extra={"fields": {"objects": list(keys), **fields}})
        trigger = Trigger(source="drift", reason=reason, at=change.at, wall=change.wall,
                          full=change.elements, seen_by="netlink")
        outcome = self._reconcile(Batch((trigger,)))
        if change.own and outcome.drift:
            log.warning("drift", extra={"fields": {"objects": list(outcome.drift), **fields}})
        return outcome

    def _docker_state(self, connected: bool) -> None:
        self.metrics.docker_connected.set(int(connected))
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._write_state)

    def stop(self, why: str) -> None:
        log.info("%s: stopping; fwsync's rules stay in the kernel (fail closed)", why)
        self._stop.set()
        self._wake.set()

    # -- running --------------------------------------------------------------------------

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._now, "signal", "SIGHUP")
        cfg = self.config
        fields: dict[str, Any] = {"rules": str(cfg.rules), "backend": cfg.backend,
                                  "drift_interval": cfg.drift_interval, "pid": os.getpid()}
        if cfg.metrics_address:
            host, port = self.metrics.serve(cfg.metrics_address)
            fields["metrics"] = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
        log.info("started", extra={"fields": fields})
        sd_notify(status_line("starting: first reconcile"))
        self._now("startup", "daemon started")
        self.watcher.start()
        self.nft_watcher.start()
        self._open_log_reader()
        tasks = [self._task(self._drift_loop(), "drift"),
                 self._task(watch_rules(cfg.rules, self._rules_event, self._stop), "rules"),
                 self._task(self._resync_loop(), "resync"),
                 self._task(self._activity_loop(), "activity")]
        interval = watchdog_interval()
        if interval:
            tasks.append(self._task(self._watchdog_loop(interval), "watchdog"))
        try:
            await self._main()
        finally:
            sd_notify("STOPPING=1")
            self.watcher.stop()
            self.nft_watcher.stop()
            if self._nflog is not None:
                loop.remove_reader(self._nflog.fileno())
                self._nflog.close()
            if self._nft_task is not None:
                self._nft_task.cancel()
                await asyncio.gather(self._nft_task, return_exceptions=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._retry is not None:
                self._retry.cancel()
            # A reconcile in flight finishes (each apply is one transaction anyway).
            self.worker.shutdown(wait=True)
            self.metrics.close()
            self.stopped = time.time()
            self._write_state()
            log.info("stopped; fwsync's rules are still enforced — `fwsync remove` takes "
                     "them out")
        return 0

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("the %s task failed", name, exc_info=t.exception())
        task.add_done_callback(done)
        return task

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def _main(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            due = self.coalescer.due()
            now = time.monotonic()
            if due is None or due > now:
                timeout = None if due is None else due - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            batch = self.coalescer.take(now)
            if batch is None:
                continue
            outcome = await self._in_worker(self._reconcile, batch)
            self._after(outcome)

    def _reconcile(self, batch: Any) -> Outcome:
        try:
            return self.reconciler.reconcile(batch)
        except Exception as exc:  # a bug: log it whole, keep the daemon (and the rules) alive
            log.exception("reconcile failed unexpectedly")
            return Outcome(result="error", trigger=batch.summary(), sources=batch.sources,
                           started=time.time(), duration=0.0, error=f"{type(exc).__name__}: "
                                                                     f"{exc}")
        finally:
            release_memory()

    def _after(self, outcome: Outcome) -> None:
        self.reconciles += 1
        self.last = outcome
        if outcome.drift:
            self.drift_repairs += 1
            self.last_drift = time.time()
        level = logging.INFO if outcome.result in ("applied", "unchanged", "held") \
            else logging.WARNING
        log.log(level, "reconcile", extra={"fields": outcome.fields()})
        self.metrics.record(outcome)
        self.metrics.docker_connected.set(int(self.watcher.connected))
        if outcome.result == "error":
            self._schedule_retry()
        else:
            self._retry_delay = RETRY_FIRST
        enforced = self.reconciler.enforced
        if not self.ready and enforced is not None:
            self.ready = True
            sd_notify("READY=1\n" + status_line(self._status(outcome)))
            reach = self.reconciler.enforcement
            fields: dict[str, Any] = {"enforcing": enforced.backend.name} \
                if reach is not None and reach.enforcing else \
                {"backend": enforced.backend.name, "not_enforcing": self._why_not()}
            log.info("ready", extra={"fields": fields})
        else:
            sd_notify(status_line(self._status(outcome)))
        self._write_state()

    def _why_not(self) -> str:
        reach = self.reconciler.enforcement
        if reach is None:
            return "the kernel could not be read"
        return "; ".join(reach.problems)

    def _status(self, outcome: Outcome) -> str:
        """Its head is the kernel's answer, read back after the last reconcile
        (core/enforcing): not the reconcile's success. The reasons it is not come last: STATUS=
        is cut at 200 characters (notify.status_line), and a long list of them must not cut off
        what the last reconcile did, or the invalid rules' first error."""
        enforced = self.reconciler.enforced
        reach = self.reconciler.enforcement
        why = ""
        if enforced is None:
            head = "NOT enforcing: no valid rules yet"
        elif reach is not None and reach.enforcing:
            head = f"enforcing ({enforced.backend.name})"
        else:
            head = f"NOT enforcing ({enforced.backend.name})"
            why = f"; why: {self._why_not()}"
        if outcome.result == "invalid-rules":
            first = outcome.diagnostics[0] if outcome.diagnostics else "invalid rules"
            head += f"; rules invalid, last good kept: {first}"
        elif outcome.result == "error":
            head += f"; last reconcile failed: {outcome.error}"
        return f"{head}; last: {outcome.result} after {outcome.trigger}; " \
               f"{outcome.ports or 0} published ports{why}"

    def _schedule_retry(self) -> None:
        if self._retry is not None or self._loop is None:
            return
        delay = self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

        def fire() -> None:
            self._retry = None
            self._now("retry", f"after an error, {delay:.0f} s later")
        self._retry = self._loop.call_later(delay, fire)

    async def _drift_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.drift_interval)
            try:
                if self.reconciler.rules_changed():
                    self._now("rules", "changed (seen by the drift tick)")
                if await self._in_worker(self.reconciler.mesh_changed):
                    self._now("swarm", "the mesh's DOCKER-INGRESS chain changed")
                keys = await self._in_worker(self.reconciler.check_drift)
            except Exception:  # a bug: say so, and keep checking
                log.exception("drift check failed unexpectedly")
                continue
            if keys:
                self.metrics.drifted()
                full = self.reconciler.checked_full
                log.warning("drift", extra={"fields": {"objects": list(keys), "full": full,
                                                       "detected_by": "tick"}})
                self.trigger(Trigger(source="drift", reason=", ".join(keys), at=time.monotonic(),
                                     wall=time.time(), full=full, seen_by="tick"))

    def _open_log_reader(self) -> None:
        """fwsync's NFLOG group (core/logging_rules), read on the loop as packets come: the
        kernel rate-limits what it sends, and each is a line and an append."""
        try:
            reader = NflogReader(LOG_GROUP).open()
        except OSError as exc:
            log.warning("logged decisions cannot be read", extra={"fields": {"error": str(exc)}})
            return
        self._nflog = reader
        assert self._loop is not None
        self._loop.add_reader(reader.fileno(), self._on_logged)
        log.info("reading logged decisions", extra={"fields": {
            "nflog_group": LOG_GROUP, "original_destination": reader.conntrack,
            "file": str(self._decisions.path)}})

    def _on_logged(self) -> None:
        reader = self._nflog
        if reader is None:
            return
        lost = reader.overruns + reader.lost
        try:
            packets = reader.read(0)
        except OSError as exc:
            log.warning("logged decisions", extra={"fields": {"error": str(exc)}})
            return
        enforced = self.reconciler.enforced
        policy = enforced.policy if enforced is not None else None
        ports = self.reconciler.ports
        decisions = [d for p in packets if (d := decision_of(p, policy, ports)) is not None]
        for d in decisions:
            log.info(ufw_line(d))
            self.metrics.logged.labels(d.verdict).inc()
        error = self._decisions.append(decisions)
        if error is not None:
            log.warning("logged decisions", extra={"fields": {"error": error}})
        if reader.overruns + reader.lost > lost:
            log.warning("logged decisions lost", extra={"fields": {
                "socket_overruns": reader.overruns, "missing": reader.lost}})

    async def _activity_loop(self) -> None:
        """Each rule's count, sampled (core/activity) in a thread of its own with a backend of
        its own (as the metrics' scrape): the reconcile worker never waits for it."""
        loop = asyncio.get_running_loop()
        activity = read_activity()
        while True:
            await asyncio.sleep(self.config.activity_interval)
            try:
                counts = await loop.run_in_executor(None, self._rule_counts)
            except Exception as exc:  # the kernel could not be read: the next sample may
                log.warning("rule counts", extra={"fields": {"error": str(exc)}})
                continue
            if not counts:
                continue  # nothing enforced yet: keep what was sampled before
            activity = observe(activity, counts, time.time())
            error = write_activity(activity)
            if error is not None:
                log.warning("rule activity", extra={"fields": {"error": error}})

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_interval)
            self._now("resync", f"every {self.config.resync_interval:.0f} s")

    async def _watchdog_loop(self, interval: float) -> None:
        """WATCHDOG=1 only while both the loop and the reconcile worker (where a hung kernel
        call would sit) answer."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.wait_for(self._in_worker(lambda: None), interval)
            except TimeoutError:
                log.error("the reconcile worker has been busy for over %.0f s; not petting "
                          "the watchdog", interval)
                continue
            sd_notify("WATCHDOG=1")

    def _write_state(self) -> None:
        last = self.last
        data: dict[str, Any] = {
            "pid": os.getpid(), "started": self.started, "updated": time.time(),
            "stopped": self.stopped, "rules": str(self.config.rules),
            "backend": self.config.backend,
            "ready": self.ready, "docker_connected": self.watcher.connected,
            "reconciles": self.reconciles, "drift_repairs": self.drift_repairs,
            "last_drift": self.last_drift,
            "last_reconcile": None if last is None else {
                "at": last.started + last.duration, **last.fields()},
        }
        try:
            write_state(data)
        except OSError as exc:
            log.warning("cannot write the state file: %s", exc)


def run_daemon(config: DaemonConfig) -> int:
    return asyncio.run(Daemon(config).run())
