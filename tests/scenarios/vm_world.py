"""The scenarios' world on the Vagrant machines (vagrant/Vagrantfile), driven over ssh with the
configuration `vagrant ssh-config` prints. dockerhost and dockerhost2 run fwsync as the systemd
unit of the repo, so every operation here is what an administrator would type."""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.scenarios.world import (
    PROBE_SCRIPT,
    SWARM_RULES,
    Capability,
    Node,
    ProbeLog,
    Role,
    State,
    WorldError,
)

# Each Docker host's address on each client's link (vagrant/Vagrantfile).
HOST_ADDR: dict[Node, dict[Role, tuple[str, str]]] = {
    "dockerhost": {"trusted": ("198.51.100.2", "2001:db8:1::2"),
                   "attacker": ("203.0.113.2", "2001:db8:2::2")},
    "dockerhost2": {"trusted": ("198.51.100.3", "2001:db8:1::3"),
                    "attacker": ("203.0.113.3", "2001:db8:2::3")},
}
IMAGE = "fwsync-test/busybox:1"
# Trap TERM so `docker stop` returns at once (busybox httpd as PID 1 ignores it).
WEB_CMD = "trap 'exit 0' TERM; httpd -f -p 80 -h /bin & wait"
REMOTE_PROBE = "/tmp/fwsync-probe.py"
MACHINES = ("dockerhost", "dockerhost2", "trusted", "attacker")


def _short(command: str, width: int = 70) -> str:
    one = " ".join(command.split())
    return one if len(one) <= width else one[: width - 3] + "..."


class VmWorld:
    name = "vagrant"
    capabilities: frozenset[Capability] = frozenset({"reboot", "systemd", "ipv6", "swarm"})

    def __init__(self, ssh_config: Path, boot_timeout: float = 900.0) -> None:
        self.ssh_config = ssh_config
        self.control_dir = ssh_config.parent
        self.boot_timeout = boot_timeout
        self._loops = itertools.count(1)

    # ------------------------------------------------------------------ ssh

    def ssh(self, host: str, command: str, *, timeout: float = 300, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-F", str(self.ssh_config), "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_dir}/cm-%n", "-o", "ControlPersist=600",
                "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", host, command]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                 input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            raise WorldError(f"{host}: `{_short(command)}` took over {timeout:.0f} s") from exc
        if check and res.returncode != 0:
            said = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise WorldError(f"{host}: `{_short(command)}` exited {res.returncode}: "
                             f"{said[-1] if said else '(no output)'}")
        return res

    def sudo(self, script: str, *, timeout: float = 300, check: bool = True,
             node: Node = "dockerhost") -> subprocess.CompletedProcess[str]:
        """A root shell script on a Docker host, sent on stdin (no quoting through ssh)."""
        try:
            return self.ssh(node, "sudo sh -s", input="set -e\n" + script, timeout=timeout,
                            check=check)
        except WorldError as exc:
            raise WorldError(str(exc).replace("`sudo sh -s`", f"`{_short(script)}`")) from None

    def run_on(self, node: Node, script: str, *, check: bool = True, timeout: float = 300
               ) -> str:
        return self.sudo(script, node=node, check=check, timeout=timeout).stdout

    def _drop_master(self, host: str) -> None:
        subprocess.run(["ssh", "-F", str(self.ssh_config), "-o",
                        f"ControlPath={self.control_dir}/cm-%n", "-O", "exit", host],
                       capture_output=True, check=False, timeout=10)

    def setup(self) -> None:
        script = PROBE_SCRIPT.read_text()
        for host in MACHINES:
            self.ssh(host, f"cat > {REMOTE_PROBE}", input=script)

    def close(self) -> None:
        for host in MACHINES:
            self._drop_master(host)

    # ------------------------------------------------------------------ World

    def reset(self, *, fwsync: bool) -> None:
        # A swarm scenario's leftovers (it cleans up itself, unless it failed half-way) first.
        for node in ("dockerhost2", "dockerhost"):
            self.sudo("docker swarm leave --force >/dev/null 2>&1 || true\n"
                      f"rm -f {SWARM_RULES}", node=node)
        self.sudo('ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f $ids >/dev/null\n'
                  "ufw status | grep -q '^Status: active'")
        if fwsync:
            self.start_fwsync()  # enabled too, so that it also starts at the next boot
        else:
            self.sudo("systemctl disable --now fwsync.service 2>/dev/null\nfwsync remove")

    def publish(self, name: str, host_port: int, *, restart_always: bool = False) -> None:
        restart = "--restart always " if restart_always else ""
        cid = self.sudo(f"docker run -d --name {name} {restart}-p {host_port}:80 {IMAGE} "
                        f"/bin/sh -c {shlex.quote(WEB_CMD)}").stdout.strip()
        addr = self.sudo("docker inspect -f '{{.NetworkSettings.IPAddress}}' " + cid
                         ).stdout.strip()
        self._wait_local(addr, 80)

    def _wait_local(self, addr: str, port: int, timeout: float = 60) -> None:
        """From dockerhost itself (OUTPUT path, no policy in the way): the server is up."""
        deadline = time.monotonic() + timeout
        while self._probe_from("dockerhost", [(addr, port)], 1.0) != ["open"]:
            if time.monotonic() > deadline:
                raise WorldError(f"dockerhost: {addr}:{port} did not answer in {timeout:.0f} s")
            time.sleep(0.5)

    def _probe_from(self, host: str, targets: list[tuple[str, int]], timeout: float
                    ) -> list[str]:
        res = self.ssh(host, f"python3 {REMOTE_PROBE} once "
                             f"{shlex.quote(json.dumps(targets))} {timeout}")
        states: list[str] = json.loads(res.stdout)
        return states

    def probe(self, src: Role, ports: list[int], *, v6: bool = False,
              node: Node = "dockerhost") -> list[State]:
        addr = HOST_ADDR[node][src][v6]
        states = self._probe_from(src, [(addr, p) for p in ports], 2.0)
        bad = [s for s in states if s not in ("open", "closed", "filtered")]
        if bad:
            raise WorldError(f"probe from {src} to {addr}: {bad}")
        return states  # type: ignore[return-value]

    @contextmanager
    def probing(self, src: Role, port: int, *, v6: bool = False, node: Node = "dockerhost"
                ) -> Iterator[ProbeLog]:
        log = ProbeLog(src, port, v6)
        out = f"/tmp/fwsync-loop-{next(self._loops)}.log"
        pid = self.ssh(src, f"setsid nohup python3 {REMOTE_PROBE} loop "
                            f"{HOST_ADDR[node][src][v6]} {port} 0.5 >{out} 2>&1 </dev/null & "
                            "echo $!").stdout.strip()
        log.read = lambda: self.ssh(src, f"cat {out}").stdout
        try:
            yield log
        finally:
            log.read = None
            self.ssh(src, f"kill {pid}; sleep 1.5", check=False)
            log.set_lines(self.ssh(src, f"cat {out}").stdout)

    def start_fwsync(self, node: Node = "dockerhost") -> None:
        # Type=notify: systemctl returns once the daemon said READY=1 (rules in the kernel).
        self.sudo("systemctl enable --now fwsync.service", node=node)

    def fwsync_running(self) -> bool:
        return self.sudo("systemctl is-active fwsync.service", check=False
                         ).stdout.strip() == "active"

    def restart_dockerd(self) -> None:
        self.sudo("systemctl restart docker.service")

    def ufw_reload(self) -> None:
        self.sudo("ufw reload")

    def reboot(self, node: Node = "dockerhost") -> None:
        before = self.ssh(node, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
        # Detached and a second later, so this ssh session ends cleanly first.
        self.sudo("nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &", node=node)
        self._drop_master(node)
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            time.sleep(3)
            res = self.ssh(node, "cat /proc/sys/kernel/random/boot_id", check=False,
                           timeout=30)
            if res.returncode == 0 and res.stdout.strip() not in ("", before):
                return
            if res.returncode != 0:
                self._drop_master(node)
        raise WorldError(f"{node} did not come back within {self.boot_timeout:.0f} s")

    def unit_times(self, unit: str) -> tuple[float, float]:
        out = self.sudo(f"systemctl show -p InactiveExitTimestampMonotonic "
                        f"-p ActiveEnterTimestampMonotonic {unit}").stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return (int(props["InactiveExitTimestampMonotonic"]) / 1e6,
                int(props["ActiveEnterTimestampMonotonic"]) / 1e6)
