"""What a scenario may do to a world: a Docker host running ufw (`default deny incoming`,
`allow 22/tcp`) and fwsync with the repo's rules/, a trusted client inside the rules' $office and
an attacker outside it. Both worlds implement `World`; a scenario names the capabilities beyond
the common ones that it needs, and runs only where the world has them."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Role = Literal["trusted", "attacker"]
State = Literal["open", "closed", "filtered"]
# The Docker hosts: every world has the first; "swarm" worlds have a second one, reachable by
# both clients, that joins the first in a swarm.
Node = Literal["dockerhost", "dockerhost2"]
# Beyond the common operations: "reboot" (a whole machine that boots again), "systemd" (fwsync
# and dockerd as units), "ipv6" (both clients have IPv6 addresses and Docker publishes over it),
# "swarm" (two Docker hosts with IPVS: Swarm's routing mesh works).
Capability = Literal["reboot", "systemd", "ipv6", "swarm"]

PROBE_SCRIPT = Path(__file__).with_name("probe_loop.py")
# The rules file the swarm scenario adds on every node (and a reset removes again).
SWARM_RULES = "/etc/fwsync/rules/30-swarm.rules"


class ScenarioFailed(AssertionError):
    """A scenario's expectation did not hold (fwsync's failure, not the world's)."""


class WorldError(RuntimeError):
    """The world itself broke (a VM did not come back, a command failed): no verdict."""


@dataclass
class ProbeLog:
    """Every attempt of a probe loop: (seconds since its start, state). Read again by `wait`
    while the `probing` block runs, and completely when it ends."""

    src: Role
    port: int
    v6: bool = False
    attempts: list[tuple[float, str]] = field(default_factory=list)
    # The loop's output so far (the world's way to read it), for `wait` inside the block.
    read: Callable[[], str] | None = field(default=None, repr=False)

    def set_lines(self, text: str, *, partial: bool = False) -> None:
        """All attempts from the loop's output (`partial`: it is still writing, so a last line
        cut short is left for the next read)."""
        attempts = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                t, state = json.loads(line)
            except ValueError:
                if partial:
                    continue
                raise
            attempts.append((float(t), str(state)))
        self.attempts = attempts

    def wait(self, until: Callable[[ProbeLog], bool], what: str, timeout: float = 60.0) -> None:
        """Until the loop's own record shows `until`: what a scenario waits for instead of a
        sleep (the loop's verdicts are what it judges)."""
        assert self.read is not None, "wait() works inside the probing block only"
        deadline = time.monotonic() + timeout
        while True:
            self.set_lines(self.read(), partial=True)
            if until(self):
                return
            if time.monotonic() > deadline:
                raise WorldError(f"the probe loop {self.src} -> {self.port} did not record "
                                 f"{what} in {timeout:.0f} s: {self.summary()}")
            time.sleep(0.2)

    def more_attempts(self, count: int, timeout: float = 60.0) -> None:
        """Until the loop has recorded `count` attempts beyond those it has now: the moments
        just after an event, seen whatever the machine's speed."""
        self.set_lines(self.read() if self.read else "", partial=True)
        have = len(self.attempts)
        self.wait(lambda log: len(log.attempts) >= have + count, f"{count} more attempts",
                  timeout)

    def counts(self) -> Counter[str]:
        return Counter(state for _, state in self.attempts)

    def first(self, state: str) -> float | None:
        return next((t for t, s in self.attempts if s == state), None)

    def outage(self) -> tuple[float, float] | None:
        """(first attempt that was not open, first open after it): when a client that had been
        served lost the service and got it back. None if it never went down and came back."""
        down = next((t for t, s in self.attempts if s != "open"), None)
        if down is None:
            return None
        back = next((t for t, s in self.attempts if s == "open" and t > down), None)
        return None if back is None else (down, back)

    def summary(self) -> str:
        c = self.counts()
        return f"{self.src} -> {self.port}{'/v6' if self.v6 else ''}: " + ", ".join(
            f"{n} {s}" for s, n in sorted(c.items())) + f" over {self.duration():.0f} s"

    def duration(self) -> float:
        return self.attempts[-1][0] if self.attempts else 0.0


class World(Protocol):
    name: str
    capabilities: frozenset[Capability]

    def reset(self, *, fwsync: bool) -> None:
        """No containers; fwsync's daemon running (fwsync=True) or stopped with its rules
        removed (fwsync=False). ufw is enabled either way."""

    def publish(self, name: str, host_port: int, *, restart_always: bool = False) -> None:
        """Run a busybox httpd container publishing container port 80 on `host_port` (all host
        addresses, IPv4 and IPv6); return once it answers on its own address."""

    def probe(self, src: Role, ports: list[int], *, v6: bool = False,
              node: Node = "dockerhost") -> list[State]:
        """Connect from `src` to the Docker host's address on `src`'s link, once per port."""

    def probing(self, src: Role, port: int, *, v6: bool = False, node: Node = "dockerhost"
                ) -> AbstractContextManager[ProbeLog]:
        """Probe in a loop from `src` for as long as the block runs."""

    def start_fwsync(self, node: Node = "dockerhost") -> None:
        """Start fwsync's daemon; return once it reports ready (rules in the kernel)."""

    def run_on(self, node: Node, script: str, *, check: bool = True, timeout: float = 300
               ) -> str:
        """(capability "swarm") A root shell script on a Docker host; its standard output."""

    def fwsync_running(self) -> bool: ...

    def restart_dockerd(self) -> None:
        """Stop and start dockerd (containers with restart=always come back)."""

    def ufw_reload(self) -> None: ...

    def reboot(self, node: Node = "dockerhost") -> None:
        """(capability "reboot") Reboot a Docker host; return once it answers again."""

    def unit_times(self, unit: str) -> tuple[float, float]:
        """(capability "systemd") When `unit` last left inactive (started activating) and when
        it became active (for Type=notify: READY=1), in seconds since boot."""


def wait_state(world: World, src: Role, port: int, want: State, *, v6: bool = False,
               timeout: float = 60.0, node: Node = "dockerhost") -> float:
    """Probe until `want`; the seconds it took. WorldError if never."""
    import time

    t0 = time.monotonic()
    while True:
        got = world.probe(src, [port], v6=v6, node=node)[0]
        if got == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise WorldError(f"{src} -> {node}:{port}{'/v6' if v6 else ''}: still {got} after "
                             f"{timeout:.0f} s, wanted {want}")
        time.sleep(0.5)
