"""Docker's event stream as triggers: which events matter, and staying connected.

Events are read from `Action`, `Actor.ID` and `Actor.Attributes`, which Docker has sent since
long before API 1.41 and alone from API 1.52 (Docker 29) on; the old `status`/`id`/`from` fields
are not used. When dockerd stops, the stream simply ends: the watcher then reconnects with
backoff, and every (re)connection is itself a trigger, so the next reconcile re-lists Docker and
whatever happened while nobody was listening cannot leave stale rules behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from fwsync.daemon.coalesce import Trigger

log = logging.getLogger("fwsync.daemon")

# What changes the inputs of a plan (published ports, container names, bridge names) at once...
URGENT = {
    ("container", "start"), ("container", "die"), ("container", "rename"),
    ("network", "create"),
    # A Swarm manager's services: a port published on the routing mesh is every node's port.
    # (Workers get no service events: the drift tick notices the port in their nat
    # DOCKER-INGRESS chain; until then fwsync's default covers it, as every DNATed connection.)
    ("service", "create"), ("service", "update"), ("service", "remove"),
}
# ...and what only might, or comes along with one of the above (`connect` precedes every
# `start`, `destroy` follows every `die` of a removed container): served, but never alone
# in a hurry.
LAZY = {
    ("container", "destroy"), ("network", "connect"), ("network", "disconnect"),
    ("network", "destroy"),
}
# Asked of Docker, so the stream carries little else (exec_*, health_status, attach, ...).
EVENT_FILTERS = {
    "type": ["container", "network", "service"],
    "event": sorted({action for _, action in URGENT | LAZY}),
}

GWBRIDGE = "docker_gwbridge"  # the bridge network a node makes when it joins a swarm

RECONNECT_FIRST = 0.25
RECONNECT_MAX = 2.0


def classify(event: Mapping[str, Any], now: float, wall: float) -> Trigger | None:
    """A Docker event → a trigger, or None when it cannot change what fwsync enforces."""
    kind = str(event.get("Type") or "")
    action = str(event.get("Action") or "")
    key = (kind, action)
    if key not in URGENT and key not in LAZY:
        return None
    actor = event.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    name = attrs.get("name") or str(actor.get("ID") or "")[:12]
    if kind == "network" and action in ("connect", "disconnect"):
        reason = f"network {action} {name} {str(attrs.get('container') or '')[:12]}".rstrip()
    elif kind == "network":
        reason = f"network {action} {name}"
    elif kind == "service":
        reason = f"service {action} {name}"
    else:
        reason = f"{action} {name}"
    # Joining or leaving a swarm makes or removes these networks; a service changes the mesh.
    swarm = kind == "service" or (kind == "network" and action in ("create", "destroy") and (
        name == GWBRIDGE or attrs.get("type") == "overlay"))
    return Trigger(source="swarm" if swarm else "docker", reason=reason, at=now, wall=wall,
                   lazy=key in LAZY)


class DockerEventWatcher(threading.Thread):
    """Follows Docker's events in a thread of its own and hands triggers to `emit` (which must
    be thread-safe). Never raises: an unreachable Docker is retried with backoff."""

    def __init__(self, emit: Callable[[Trigger], None], *,
                 on_state: Callable[[bool], None] | None = None,
                 first_delay: float = RECONNECT_FIRST, max_delay: float = RECONNECT_MAX) -> None:
        super().__init__(name="docker-events", daemon=True)
        self._emit = emit
        self._on_state = on_state
        self._first, self._max = first_delay, max_delay
        self._stop = threading.Event()
        self._stream: Any = None
        self.connected = False
        self.connects = 0

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a half-dead HTTP response: nothing left to do
                log.debug("closing Docker's event stream failed", exc_info=True)

    def run(self) -> None:
        delay = self._first
        down = False  # an outage was already logged
        while not self._stop.is_set():
            try:
                self._follow()
                if self._stop.is_set():
                    break
                # The stream ended: dockerd stopped (or is restarting).
                log.warning("Docker's event stream ended (dockerd stopped?); the rules stay "
                            "enforced; reconnecting")
            except Exception as exc:  # the SDK raises DockerException, requests' and OSErrors
                if self._stop.is_set():
                    break
                if self.connected or not down:
                    log.warning("cannot reach Docker (%s); the rules stay enforced; retrying "
                                "with backoff up to %.0f s", _short(exc), self._max)
            finally:
                if self.connected:
                    delay = self._first  # it was up: back off afresh from the first delay
                    self._state(False)
                self.connected = False
                self._stream = None
            down = True
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._max)

    def _state(self, connected: bool) -> None:
        if self._on_state is not None:
            self._on_state(connected)

    def _follow(self) -> None:
        from fwsync.observe.docker import docker_client  # the SDK: only in the watcher thread

        client = docker_client(timeout=10)
        try:
            client.ping()
            stream = client.api.events(decode=True, filters=EVENT_FILTERS)
            self._stream = stream
            if self._stop.is_set():
                return
            # Subscribed first, re-listed after: nothing can fall between the two.
            self.connected = True
            self.connects += 1
            self._state(True)
            reason = "connected" if self.connects == 1 else "reconnected: re-listing Docker"
            log.info("Docker events: %s", reason)
            self._emit(Trigger(source="reconnect", reason=reason, at=time.monotonic(),
                               wall=time.time()))
            for event in stream:
                if self._stop.is_set():
                    return
                trigger = classify(event, time.monotonic(), time.time())
                if trigger is not None:
                    self._emit(trigger)
        finally:
            client.close()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
