"""`fwsync daemon` as a subprocess inside a lab's HOST namespace, for the e2e tests and the
benchmark: started like `run_fwsync` runs commands (DOCKER_HOST and the lock file of the lab),
with JSON logs to a file the test reads, and always ended by its pid."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from tests.lab import _ENV, DockerLab, KernelLab, LabError, _kill_wait

Record = dict[str, Any]
_names = itertools.count(1)


class DaemonProc:
    """`python -m fwsync daemon --log-format json ...` in lab.host; a context manager."""

    def __init__(self, lab: KernelLab | DockerLab, rules: Path, *args: str,
                 env: Mapping[str, str] | None = None, name: str | None = None) -> None:
        self.lab, self.rules, self.args = lab, rules, tuple(args)
        name = name or f"daemon-{next(_names)}"  # labs are shared: never reuse a log
        self.log = lab.dir / f"{name}.log"
        self.state = lab.dir / f"{name}.json"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment the daemon runs with (and a `fwsync status` that should see it)."""
        full = dict(_ENV)
        full.update(DOCKER_HOST=self.lab.docker_host,
                    FWSYNC_LOCK_FILE=str(self.lab.dir / "fwsync.lock"),
                    FWSYNC_DAEMON_STATE=str(self.state), FWSYNC_RULES=str(self.rules),
                    FWSYNC_DOCKER_STATE=str(self.lab.dir / "docker.json"),
                    FWSYNC_RULE_ACTIVITY=str(self.lab.dir / "rule-activity.json"),
                    FWSYNC_DECISIONS=str(self.lab.dir / "decisions.jsonl"),
                    FWSYNC_PENDING=str(self.lab.dir / "pending-apply.json"))
        full.update(self.extra_env)
        return full

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LabError("the daemon is not running")
        return self.proc.pid

    def start(self) -> Self:
        argv: Sequence[str] = [*self.lab.host.nsenter_prefix(), sys.executable, "-m", "fwsync",
                               "daemon", "--log-format", "json", *self.args]
        with open(self.log, "ab") as log:
            # nsenter execs: the pid is the daemon's own.
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def records(self) -> list[Record]:
        out: list[Record] = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        out.append(rec)
        return out

    def reconciles(self) -> list[Record]:
        return [r for r in self.records() if r.get("msg") == "reconcile"]

    def wait_for(self, pred: Callable[[Record], bool], timeout: float = 30.0,
                 what: str = "a log line") -> Record:
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.records():
                if pred(rec):
                    return rec
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"the daemon exited ({self.proc.returncode}) while waiting for "
                               f"{what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"no {what} from the daemon in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> Record:
        return self.wait_for(lambda r: r.get("msg") == "ready", timeout, "'ready'")

    def wait_reconcile(self, pred: Callable[[Record], bool], after: int = 0,
                       timeout: float = 30.0, what: str = "a reconcile") -> Record:
        """The first reconcile line past the first `after` ones that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.reconciles()[after:]:
                if pred(rec):
                    return rec
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"the daemon exited ({self.proc.returncode}) while waiting for "
                               f"{what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"no {what} from the daemon in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait; SIGKILL if it will not go. The exit status (None if it was killed)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None and not _kill_wait(proc.pid, timeout, proc):
            return None
        return proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Runs inside a peer's namespace: keeps starting TCP connects to each target (non-blocking, one
# new SYN every `gap` seconds per target, each given up after `give_up` s) until SIGTERM, then
# prints what it saw. A connect that completes is a port that let the peer through.
_TIGHT_LOOP = r"""
import json, select, signal, socket, sys, time
targets, gap, give_up = json.loads(sys.argv[1])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
stats = {f"{a}:{p}": {"attempts": 0, "open": 0, "refused": 0, "filtered": 0, "first_open": None}
         for a, p in targets}
pending = {}  # fd -> (socket, key, started)
poller = select.poll()
print("ready", flush=True)
next_at = time.monotonic()
while not stop:
    now = time.monotonic()
    if now >= next_at:
        next_at = now + gap
        for addr, port in targets:
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET,
                              socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((addr, port))
            key = f"{addr}:{port}"
            stats[key]["attempts"] += 1
            pending[s.fileno()] = (s, key, now)
            poller.register(s.fileno(), select.POLLOUT)
    ready = poller.poll(max(0.0, next_at - time.monotonic()) * 1000)
    now = time.monotonic()
    for fd, _ev in ready:
        s, key, _ = pending.pop(fd)
        poller.unregister(fd)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            stats[key]["open"] += 1
            stats[key]["first_open"] = stats[key]["first_open"] or time.time()
        else:
            stats[key]["refused"] += 1
        s.close()
    for fd, (s, key, started) in list(pending.items()):
        if now - started > give_up:
            stats[key]["filtered"] += 1
            poller.unregister(fd)
            s.close()
            del pending[fd]
print(json.dumps(stats), flush=True)
"""


class TightLoop:
    """A client in `peer`'s namespace that tries to connect to HOST's ports in a tight loop
    (a new SYN every `gap` seconds per port) from `start()` until `stop()`, which returns, per
    port, how many attempts connected (`open`), were refused, or timed out (`filtered`)."""

    def __init__(self, peer: Any, ports: Sequence[int], gap: float = 0.002,
                 give_up: float = 0.5) -> None:
        self.peer = peer
        self.targets = [(peer.host_v4, p) for p in ports]
        self.gap, self.give_up = gap, give_up
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Self:
        self.proc = self.peer.ns.spawn(
            [sys.executable, "-I", "-c", _TIGHT_LOOP,
             json.dumps([self.targets, self.gap, self.give_up])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise LabError(f"the tight-loop client did not start: {self.proc.stderr}")
        return self

    def stop(self) -> dict[int, dict[str, Any]]:
        proc, self.proc = self.proc, None
        if proc is None:
            raise LabError("the tight-loop client is not running")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        lines = out.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise LabError(f"the tight-loop client failed ({proc.returncode}):\n{err}")
        stats = json.loads(lines[-1])
        return {int(key.rsplit(":", 1)[1]): value for key, value in stats.items()}

    def kill(self) -> None:
        if self.proc is not None:
            _kill_wait(self.proc.pid, 5, self.proc)
            self.proc.communicate(timeout=10)
            self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
