"""The scenarios' world in the namespace test bed: a DockerLab (real dockerd in a network
namespace, ufw enabled inside it) and `fwsync daemon` run from this checkout with the repo's
rules/. No whole machine: no reboot, no systemd (the VM world covers those)."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.daemon_helpers import DaemonProc
from tests.lab import DockerLab, LabError, Peer, probe_many, run_fwsync
from tests.scenarios.world import (
    PROBE_SCRIPT,
    Capability,
    Node,
    ProbeLog,
    Role,
    State,
    WorldError,
)


class LabWorld:
    name = "namespaces"
    capabilities: frozenset[Capability] = frozenset({"ipv6"})

    def __init__(self, lab: DockerLab, rules: Path) -> None:
        self.lab, self.rules = lab, rules
        self.daemon: DaemonProc | None = None
        self._loops = itertools.count(1)

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def _peer(self, src: Role) -> Peer:
        return self.lab.trusted if src == "trusted" else self.lab.attacker

    def reset(self, *, fwsync: bool) -> None:
        self.lab.remove_containers()
        if fwsync:
            if not self.fwsync_running():
                self.start_fwsync()
        else:
            self.close()
            res = run_fwsync(self.lab, "remove")
            if res.returncode != 0:
                raise WorldError(f"fwsync remove exited {res.returncode}: {res.stderr}")

    def publish(self, name: str, host_port: int, *, restart_always: bool = False) -> None:
        self.lab.run_web(name, {"80/tcp": host_port},
                         restart_policy="always" if restart_always else None)

    def probe(self, src: Role, ports: list[int], *, v6: bool = False,
              node: Node = "dockerhost") -> list[State]:
        peer = self._peer(src)
        self._one_host(node)
        return probe_many(peer, [(peer.host_addr(v6), p) for p in ports])

    @staticmethod
    def _one_host(node: Node) -> None:
        if node != "dockerhost":
            raise WorldError("the namespace test bed has one Docker host")

    @contextmanager
    def probing(self, src: Role, port: int, *, v6: bool = False, node: Node = "dockerhost"
                ) -> Iterator[ProbeLog]:
        self._one_host(node)
        peer = self._peer(src)
        log = ProbeLog(src, port, v6)
        out = self.lab.dir / f"probe-loop-{next(self._loops)}.log"
        with open(out, "wb") as fh:
            proc = peer.ns.spawn([sys.executable, "-I", str(PROBE_SCRIPT), "loop",
                                  peer.host_addr(v6), str(port), "0.5"], stdout=fh,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.read = out.read_text
        try:
            yield log
        finally:
            log.read = None
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.set_lines(out.read_text())

    def start_fwsync(self, node: Node = "dockerhost") -> None:
        self._one_host(node)
        self.close()
        self.daemon = DaemonProc(self.lab, self.rules).start()
        try:
            self.daemon.wait_ready(timeout=60)
        except LabError as exc:
            raise WorldError(str(exc)) from exc

    def fwsync_running(self) -> bool:
        return self.daemon is not None and self.daemon.proc is not None \
            and self.daemon.proc.poll() is None

    def restart_dockerd(self) -> None:
        self.lab.stop_dockerd()
        self.lab.start_dockerd()

    def ufw_reload(self) -> None:
        self.lab.ufw("reload")

    def reboot(self, node: Node = "dockerhost") -> None:
        raise WorldError("the namespace test bed has no machine to reboot")

    def run_on(self, node: Node, script: str, *, check: bool = True, timeout: float = 300
               ) -> str:
        raise WorldError("the namespace test bed has no second Docker host (and no IPVS)")

    def unit_times(self, unit: str) -> tuple[float, float]:
        raise WorldError("the namespace test bed has no systemd")
