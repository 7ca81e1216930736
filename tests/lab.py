"""The test bed: throw-away network namespaces that look like a Docker host and its neighbours.

Used by the kernel and e2e tests and by the demo, so nothing here imports pytest at module level.
Every object cleans up after itself (context managers); nothing touches the root namespace's
firewall or addresses, and only documentation addresses are used:

    trusted  198.51.100.10/25  2001:db8:1::10/64 ──veth── 198.51.100.1  2001:db8:1::1  ┐
    attacker 203.0.113.7/25    2001:db8:2::7/64  ──veth── 203.0.113.1   2001:db8:2::1  ├ HOST
    containers 198.51.100.128/25, 2001:db8:d0c::/64 behind bridge 198.51.100.129      ┘

`KernelLab` fakes the container and Docker's rules (fast, no dockerd); `DockerLab` runs a real
dockerd inside HOST (started with `nsenter --net`: `ip netns exec` remounts /sys, and
dockerd then fails with "Devices cgroup isn't mounted"): the machine's own (Debian 12's 20.10)
or one of the engines tools/fetch-engines unpacks (tests/engines.py).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from tests.docker_layouts import (
    LAYOUTS,
    Bridge,
    Layout,
    Published,
    iptables_base,
    iptables_publish,
    nftables_publish_script,
    nftables_restart_script,
)
from tests.engines import Engine, default_engine, engine

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

Proto = Literal["tcp", "udp"]
State = Literal["open", "closed", "filtered"]
Variant = Literal["nft", "legacy"]
Target = tuple[str, int, Proto]  # (address, port, proto)

# Addresses of the topology (see the module docstring).
TRUSTED_V4, TRUSTED_V6 = "198.51.100.10", "2001:db8:1::10"
ATTACKER_V4, ATTACKER_V6 = "203.0.113.7", "2001:db8:2::7"
HOST_TRUSTED_V4, HOST_TRUSTED_V6 = "198.51.100.1", "2001:db8:1::1"
HOST_ATTACKER_V4, HOST_ATTACKER_V6 = "203.0.113.1", "2001:db8:2::1"
BRIDGE_V4, CTR_V4, CTR_NET_V4 = "198.51.100.129", "198.51.100.130", "198.51.100.128/25"
BRIDGE_V6, CTR_V6, CTR_NET_V6 = "2001:db8:d0c::1", "2001:db8:d0c::2", "2001:db8:d0c::/64"
DOCKER_POOL = "base=203.0.113.128/25,size=28"
BUSYBOX_IMAGE = "fwsync-test/busybox:1"

# Tools live in sbin; a CI or sudo environment may not have it on PATH.
_ENV = dict(os.environ)
_ENV["PATH"] = ":".join(
    dict.fromkeys([*_ENV.get("PATH", "").split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin"])
).strip(":")


class LabError(RuntimeError):
    """The test bed itself failed (not the code under test)."""


class LabUnavailable(LabError):
    """This machine cannot run the test bed (not root, tools missing)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_ENV["PATH"])


def missing(*tools: str) -> list[str]:
    """What stops the test bed here: empty when it can run. `ip`/`nsenter` are always needed."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (network namespaces and the firewall need root)")
    for tool in dict.fromkeys(("ip", "nsenter", *tools)):
        if _which(tool) is None:
            problems.append(f"{tool!r} not found on PATH")
    if not problems:
        res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, env=_ENV,
                             check=False)
        if res.returncode != 0:
            problems.append(f"'ip netns' does not work: {res.stderr.strip()}")
    return problems


def kernel_tools(variant: Variant = "nft") -> tuple[str, ...]:
    """What a KernelLab of this variant (and ruleset_snapshot) runs."""
    return (*(f"{fam}-{variant}{suffix}" for fam in ("iptables", "ip6tables")
              for suffix in ("", "-save", "-restore")), "nft", "ipset", "sh", "cat")


DOCKER_TOOLS = ("dockerd", "containerd", "runc", "setsid", "ldd", "busybox", "ufw", "iptables",
                "ip6tables", "iptables-save", "nft", "ipset", "umount")


def engine_problems(eng: Engine) -> list[str]:
    """What stops a DockerLab of this engine here: empty when it can run."""
    if not eng.is_fetched():
        return [f"Docker {eng.name} is not fetched (run tools/fetch-engines)"]
    return []


def require(*tools: str, engine: Engine | None = None) -> None:
    """The one gate of every kernel/e2e test: skip with the reason outside CI, fail loudly in CI
    (a skipped test would let a broken CI machine pass). Outside pytest, raise LabUnavailable.
    With an engine: it must be fetched too."""
    problems = missing(*tools) + (engine_problems(engine) if engine is not None else [])
    if not problems:
        return
    msg = "test bed unavailable: " + "; ".join(problems)
    if "pytest" not in sys.modules:
        raise LabUnavailable(msg)
    import pytest

    if in_ci():
        pytest.fail(msg + " (CI=true: kernel and e2e tests may not skip)", pytrace=False)
    pytest.skip(msg)


def _run(cmd: Sequence[str], *, check: bool = True, input: str | None = None,
         timeout: float = 60, env: Mapping[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output and an error that shows what the command said."""
    res = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=timeout,
                         env=dict(env) if env is not None else _ENV, check=False)
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stderr}{res.stdout}")
    return res


_counter = itertools.count(1)


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def unique_name(role: str) -> str:
    """Namespace names that can't collide with another test run: pid + counter."""
    return f"fws-{os.getpid()}-{next(_counter)}-{role}"


# --------------------------------------------------------------------------- namespaces


class Netns:
    """A named network namespace (/run/netns/NAME), deleted by `delete()` or the `with` block."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @classmethod
    def create(cls, name: str) -> Netns:
        _run(["ip", "netns", "add", name])
        ns = cls(name)
        try:
            ns.ip("link", "set", "lo", "up")
            # Without this our IPv6 addresses stay "tentative" for ~1-2 s and early probes time out.
            ns.set_sysctls({"net.ipv6.conf.all.accept_dad": 0,
                            "net.ipv6.conf.default.accept_dad": 0})
        except BaseException:
            ns.delete()
            raise
        return ns

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name

    def exists(self) -> bool:
        return self.path.exists()

    def nsenter_prefix(self) -> list[str]:
        # nsenter, not `ip netns exec`: the latter remounts /sys, which breaks dockerd.
        return ["nsenter", f"--net={self.path}"]

    def run(self, cmd: Sequence[str], check: bool = True, *, input: str | None = None,
            timeout: float = 60, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        # `ip netns exec` also bind-mounts /etc/netns/NAME/* over /etc (ufw's private config).
        return _run(["ip", "netns", "exec", self.name, *cmd], check=check, input=input,
                    timeout=timeout, env=env)

    def ip(self, *args: str) -> str:
        return _run(["ip", "-n", self.name, *args]).stdout

    def spawn(self, cmd: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start a background process in the namespace; nsenter execs, so .pid is the process."""
        popen.setdefault("env", _ENV)
        return subprocess.Popen([*self.nsenter_prefix(), *cmd], **popen)

    def sysctl(self, key: str, value: int | str | None = None) -> str:
        """Read or write a per-namespace sysctl (net.*: /proc/sys/net follows the reader's netns;
        no dependency on procps' sysctl)."""
        if value is None:
            return _run([*self.nsenter_prefix(), "cat", _sysctl_path(key)]).stdout.strip()
        self.set_sysctls({key: value})
        return str(value)

    def set_sysctls(self, values: Mapping[str, int | str]) -> None:
        args = [a for k, v in values.items() for a in (str(v), _sysctl_path(k))]
        script = 'while [ $# -gt 0 ]; do echo "$1" > "$2" || exit 1; shift 2; done'
        _run([*self.nsenter_prefix(), "sh", "-c", script, "sh", *args])

    def pids(self) -> list[int]:
        res = _run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in res.stdout.split()] if res.returncode == 0 else []

    def delete(self) -> None:
        if self.exists():
            _run(["ip", "netns", "del", self.name])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


def veth(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair created directly inside a and b: names are per-namespace, never in the root."""
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")


def add_addr(ns: Netns, ifname: str, cidr: str) -> None:
    extra = ["nodad"] if ":" in cidr else []
    ns.ip("addr", "add", cidr, "dev", ifname, *extra)


def default_route(ns: Netns, via_v4: str, via_v6: str | None = None) -> None:
    ns.ip("route", "add", "default", "via", via_v4)
    if via_v6:
        ns.ip("-6", "route", "add", "default", "via", via_v6)


def set_forwarding(ns: Netns, on: bool) -> None:
    ns.set_sysctls({"net.ipv4.ip_forward": int(on), "net.ipv6.conf.all.forwarding": int(on)})


# --------------------------------------------------------------------------- probing

# Runs inside the probing namespace; one process probes all targets in parallel threads, so a
# batch of "filtered" answers costs one timeout, not one each.
# PROBE_TIMEOUT: a handshake between namespaces on one host's veths answers in well under a
# millisecond, even with both cores busy; 1 s is the kernel's initial SYN retransmission timeout,
# so a probe waits as long as its first SYN can take. Filtered probes are most of the suite's
# time (a routed-network e2e test: ~10 s of its ~20 s at 2 s each).
PROBE_TIMEOUT = 1.0
_PROBE_SCRIPT = r"""
import errno, json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets, timeout = json.loads(sys.argv[1])
# An ICMP error (or RST) means something answered: the port is reachable-but-refused.
ANSWERED = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
def one(t):
    addr, port, proto = t
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(fam, kind) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            if proto == "udp":
                s.send(b"fwsync-probe")
                s.recv(2048)
            return ["open", ""]
        except TimeoutError:
            return ["filtered", "timeout"]
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            return ["closed" if e.errno in ANSWERED else "error", f"{name}: {e}"]
with ThreadPoolExecutor(max(1, min(64, len(targets)))) as pool:
    print(json.dumps(list(pool.map(one, targets))))
"""


@dataclass(frozen=True)
class Peer:
    """A neighbour of HOST: its namespace, its addresses and HOST's address on its link."""

    ns: Netns
    v4: str
    v6: str
    host_v4: str
    host_v6: str

    @property
    def name(self) -> str:
        return self.ns.name

    def host_addr(self, v6: bool = False) -> str:
        """Where this peer connects to reach HOST's published ports."""
        return self.host_v6 if v6 else self.host_v4

    def probe(self, port: int, proto: Proto = "tcp", *, v6: bool = False,
              addr: str | None = None, timeout: float = PROBE_TIMEOUT) -> State:
        return probe(self, addr or self.host_addr(v6), port, proto, timeout)


NsLike = Netns | Peer | str


def _ns(ns: NsLike) -> Netns:
    if isinstance(ns, Peer):
        return ns.ns
    return Netns(ns) if isinstance(ns, str) else ns


def probe_many(ns: NsLike, targets: Iterable[Target | tuple[str, int]],
               timeout: float = PROBE_TIMEOUT) -> list[State]:
    """Probe many (addr, port[, proto]) from inside `ns` at once; results in the same order.
    TCP: connected=open, refused/ICMP error=closed, timeout=filtered. UDP: needs an echo server;
    reply=open, ICMP unreachable=closed, timeout=filtered."""
    norm = [(str(t[0]), int(t[1]), t[2] if len(t) > 2 else "tcp") for t in targets]
    if not norm:
        return []
    res = _run([*_ns(ns).nsenter_prefix(), sys.executable, "-I", "-c", _PROBE_SCRIPT,
                json.dumps([norm, timeout])], timeout=timeout + 30)
    out: list[State] = []
    for (addr, port, proto), (state, detail) in zip(norm, json.loads(res.stdout), strict=True):
        if state == "error":  # a local failure is a test bed bug, not a firewall verdict
            raise LabError(f"probe {proto} [{addr}]:{port} from {_ns(ns).name}: {detail}")
        out.append(state)
    return out


def probe(ns: NsLike, addr: str, port: int, proto: Proto = "tcp",
          timeout: float = PROBE_TIMEOUT) -> State:
    return probe_many(ns, [(addr, port, proto)], timeout)[0]


def wait_for(ns: NsLike, addr: str, port: int, proto: Proto = "tcp", want: State = "open",
             timeout: float = 15.0, probe_timeout: float = 1.0) -> None:
    """Poll until a probe answers `want` (servers and IPv6 neighbours need a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe(ns, addr, port, proto, probe_timeout)
        if got == want:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{proto} [{addr}]:{port} from {_ns(ns).name}: {got}, wanted {want}")
        time.sleep(0.1)


@contextlib.contextmanager
def serve_tcp(ns: NsLike, ports: Sequence[int]) -> Iterator[None]:
    """TCP listeners on `ns` itself, IPv4 and IPv6 (one dual-stack socket a port), accepting and
    closing: a host's own services (sshd) as its INPUT path sees them, or a stand-in for
    docker-proxy's sockets. Stopped, by its pid, when the block ends."""
    proc = _ns(ns).spawn([sys.executable, "-I", "-c", _CTR_SERVER, json.dumps([list(ports), []])],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not (sel.select(10) and proc.stdout.readline().strip() == "ready"):
                raise LabError(f"listener on {ports} in {_ns(ns).name} did not start")
        yield
    finally:
        _kill_wait(proc.pid, 5, proc)
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- base topology


def _kill_wait(pid: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> bool:
    """SIGTERM by pid, wait; SIGKILL if it won't go. True if it exited on SIGTERM."""
    def alive() -> bool:
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return pid_running(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if proc is not None:
                proc.wait(10)
            return False
        time.sleep(0.05)
    return True


def pid_running(pid: int) -> bool:
    """Alive and not a zombie: containerd-shim daemonizes to PID 1, which reaps it a bit later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _unmount_under(path: Path) -> None:
    """Lazy-unmount what a crashed dockerd left mounted below `path` (netns files, overlays)."""
    prefix = str(path).rstrip("/") + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        _run(["umount", "-l", mnt], check=False)


class _Topology:
    """HOST with trusted and attacker neighbours, plus a short private directory."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid()}-{next(_counter)}"
        self.dir = Path(tempfile.mkdtemp(prefix="fws-", dir="/tmp"))
        self.namespaces: list[Netns] = []
        self.timings: dict[str, float] = {}
        self.host: Netns
        self.trusted: Peer
        self.attacker: Peer
        self._made_etc_netns = False

    def _netns(self, role: str) -> Netns:
        ns = Netns.create(f"fws-{self.tag}-{role}")
        self.namespaces.append(ns)
        return ns

    def _build_topology(self) -> None:
        self.host = self._netns("host")
        self.trusted = self._peer("trusted", TRUSTED_V4, TRUSTED_V6, HOST_TRUSTED_V4,
                                  HOST_TRUSTED_V6)
        self.attacker = self._peer("attacker", ATTACKER_V4, ATTACKER_V6, HOST_ATTACKER_V4,
                                   HOST_ATTACKER_V6)

    def _peer(self, role: str, v4: str, v6: str, host_v4: str, host_v6: str) -> Peer:
        """A neighbour on its own link to HOST (/25 and /64), default routes via HOST."""
        ns = self._netns(role)
        link = f"v-{role}"
        veth(self.host, link, ns, "eth0")
        add_addr(self.host, link, f"{host_v4}/25")
        add_addr(self.host, link, f"{host_v6}/64")
        add_addr(ns, "eth0", f"{v4}/25")
        add_addr(ns, "eth0", f"{v6}/64")
        default_route(ns, host_v4, host_v6)
        return Peer(ns, v4, v6, host_v4, host_v6)

    @property
    def peers(self) -> tuple[Peer, Peer]:
        return self.trusted, self.attacker

    def enable_ufw(self) -> None:
        """ufw in HOST with a private copy of its config, as the notes describe:
        default deny incoming, allow 22/tcp, enable."""
        etc = Path("/etc/netns") / self.host.name
        self._made_etc_netns = self._made_etc_netns or not etc.parent.exists()
        etc.mkdir(parents=True, exist_ok=True)
        # /etc/default holds ufw's default policies: without a private copy, `ufw default`
        # would rewrite the machine's own /etc/default/ufw.
        for src, dst in ((Path("/etc/ufw"), etc / "ufw"), (Path("/etc/default"), etc / "default")):
            if not dst.exists():
                shutil.copytree(src, dst, symlinks=True)
        for cmd in (["default", "deny", "incoming"], ["allow", "22/tcp"], ["--force", "enable"]):
            self.host.run(["ufw", *cmd])

    def ufw(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.run(["ufw", *args], check=check)

    def _teardown_topology(self, errors: list[str]) -> None:
        for ns in reversed(self.namespaces):
            shutil.rmtree(Path("/etc/netns") / ns.name, ignore_errors=True)  # ufw's private /etc
            # Anything still inside is ours (our servers, a dockerd's leftovers): end it by pid.
            for pid in ns.pids():
                errors.append(f"pid {pid} ({_comm(pid)}) was still in {ns.name}; killed")
                _kill_wait(pid, 5)
            try:
                ns.delete()
            except LabError as exc:
                errors.append(str(exc))
        _unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            errors.append(f"could not remove {self.dir}")
        if self._made_etc_netns:  # leave /etc as we found it; rmdir refuses if another lab uses it
            with contextlib.suppress(OSError):
                Path("/etc/netns").rmdir()

    def leftovers(self) -> list[str]:
        """What cleanup should have removed but did not (for tests of the test bed)."""
        left = [f"namespace {ns.name}" for ns in self.namespaces if ns.exists()]
        dirs = [self.dir, *(Path("/etc/netns") / ns.name for ns in self.namespaces)]
        left += [f"directory {d}" for d in dirs if d.exists()]
        return left


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# --------------------------------------------------------------------------- KernelLab

_CTR_SERVER = r"""
import json, selectors, socket, sys
tcp, udp = json.loads(sys.argv[1])
sel = selectors.DefaultSelector()
def bind(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # one socket for v4 and v6
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.setblocking(False)
    return s
for p in tcp:
    s = bind(socket.SOCK_STREAM, p); s.listen(512); sel.register(s, selectors.EVENT_READ, "tcp")
for p in udp:
    sel.register(bind(socket.SOCK_DGRAM, p), selectors.EVENT_READ, "udp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            if key.data == "tcp":
                key.fileobj.accept()[0].close()
            else:
                data, peer = key.fileobj.recvfrom(65535)
                key.fileobj.sendto(data, peer)
        except OSError:
            pass
"""


class KernelLab(_Topology):
    """A Docker-like host without dockerd: HOST routes to a fake container CTR behind a bridge,
    with Docker's firewall rules written by hand (tests/docker_layouts.py): `docker` picks the
    generation, "20.10" (20.10-27.x; v6_docker_user=False for 20.10 itself, whose IPv6 has no
    DOCKER-USER), "28" (DOCKER-FORWARD, raw-table drops) or "29-nftables" (Docker 29's
    `ip`/`ip6 docker-bridges` tables). Fast enough for one lab per test."""

    def __init__(self, variant: Variant = "nft", *, docker: Layout = "20.10",
                 bridge: str = "docker0",
                 tcp_ports: Sequence[int] = (80, 81), udp_ports: Sequence[int] = (80, 81),
                 v6_docker_user: bool = True) -> None:
        if variant not in ("nft", "legacy"):
            raise ValueError(f"variant must be 'nft' or 'legacy', not {variant!r}")
        if docker not in LAYOUTS:
            raise ValueError(f"docker must be one of {', '.join(LAYOUTS)}, not {docker!r}")
        if docker != "20.10" and not v6_docker_user:
            raise ValueError("only Docker 20.10's layout lacks an IPv6 DOCKER-USER")
        super().__init__()  # makes the directory: only once the arguments are known good
        self.variant: Variant = variant
        self.docker: Layout = docker
        self.bridge = bridge
        self.tcp_ports, self.udp_ports = tuple(tcp_ports), tuple(udp_ports)
        self.v6_docker_user = v6_docker_user
        self.published: list[tuple[int, int, Proto, str | None]] = []
        # The forward policy dockerd sets where it turned forwarding on itself (29: its own
        # filter-FORWARD base chain's; 20.10/28: iptables FORWARD's).
        self.forward_policy = "drop"
        self.ctr: Netns
        self._server: subprocess.Popen[str] | None = None
        # Servers of networks added later (tests/lab_networks.py), stopped by cleanup.
        self.servers: list[subprocess.Popen[str]] = []

    @property
    def docker_host(self) -> str:
        # A socket that never exists: fwsync run here must not find the machine's real dockerd.
        return f"unix://{self.dir}/docker.sock"

    def start(self) -> Self:
        t0 = time.monotonic()
        try:
            self._build_topology()
            self.ctr = self._netns("ctr")
            self.host.ip("link", "add", self.bridge, "type", "bridge")
            self.host.ip("link", "set", self.bridge, "up")
            add_addr(self.host, self.bridge, f"{BRIDGE_V4}/25")
            add_addr(self.host, self.bridge, f"{BRIDGE_V6}/64")
            veth(self.host, "veth-ctr", self.ctr, "eth0")
            self.host.ip("link", "set", "veth-ctr", "master", self.bridge)
            add_addr(self.ctr, "eth0", f"{CTR_V4}/25")
            add_addr(self.ctr, "eth0", f"{CTR_V6}/64")
            default_route(self.ctr, BRIDGE_V4, BRIDGE_V6)
            set_forwarding(self.host, True)
            self.write_docker_rules()
            self._start_server()
        except BaseException:
            self.cleanup()
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def _start_server(self) -> None:
        self._server = self.start_server(self.ctr, self.tcp_ports, self.udp_ports)

    def start_server(self, ns: Netns, tcp: Sequence[int], udp: Sequence[int] = ()
                     ) -> subprocess.Popen[str]:
        """A TCP accept-and-close / UDP echo server in `ns` (a container), once it listens."""
        log_path = self.dir / f"server-{ns.name}.log"
        with open(log_path, "w") as log:  # the child keeps its own copy
            server = ns.spawn(
                [sys.executable, "-I", "-c", _CTR_SERVER, json.dumps([list(tcp), list(udp)])],
                stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        assert server.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(server.stdout, selectors.EVENT_READ)
            ready = sel.select(10) and server.stdout.readline().strip() == "ready"
        if not ready:
            _kill_wait(server.pid, 5, server)
            raise LabError("container server did not start: " + log_path.read_text()[-2000:])
        return server

    def tool(self, name: str, v6: bool = False) -> str:
        """The variant's binary, e.g. tool("iptables-restore", v6=True) -> ip6tables-nft-restore."""
        fam, _, rest = name.partition("-")
        fam = "ip6tables" if v6 else fam
        return f"{fam}-{self.variant}" + (f"-{rest}" if rest else "")

    def iptables(self, *args: str, v6: bool = False, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        return self.host.run([self.tool("iptables", v6), "-w", *args], check=check)

    def restore(self, text: str, *, v6: bool = False, noflush: bool = False) -> None:
        flags = ["--noflush"] if noflush else []
        self.host.run([self.tool("iptables-restore", v6), "-w", *flags], input=text)

    def save(self, v6: bool = False) -> str:
        return self.host.run([self.tool("iptables-save", v6)]).stdout

    @property
    def docker_drops_direct_routing(self) -> bool:
        """Docker itself drops packets for a published container's address that come from
        outside its bridge (raw PREROUTING, 28.0+; 29's nftables too)."""
        return self.docker != "20.10"

    def _published(self, v6: bool) -> list[Published]:
        ctr = CTR_V6 if v6 else CTR_V4
        return [Published(ctr, hp, cp, proto, ip) for hp, cp, proto, ip in self.published
                if ip is None or (":" in ip) == v6]

    def _bridges(self, v6: bool) -> list[Bridge]:
        return [Bridge(self.bridge, CTR_NET_V6 if v6 else CTR_NET_V4, self._published(v6))]

    def write_docker_rules(self) -> None:
        """What a dockerd of this generation writes when it starts, for the ports published so
        far (none at lab start). For 29-nftables this is Docker's restart: both tables deleted
        and recreated in one batch; the iptables layouts restore all of Docker's tables."""
        if self.docker == "29-nftables":
            self.nft(nftables_restart_script(self._bridges(False), self._bridges(True),
                                             forward_policy=self.forward_policy))
            return
        for v6 in (False, True):
            net = CTR_NET_V6 if v6 else CTR_NET_V4
            docker_user = self.v6_docker_user if v6 else True
            self.restore(iptables_base(self.docker, self.bridge, net, v6=v6,
                                       docker_user=docker_user), v6=v6)
            seen: set[str] = set()
            for p in self._published(v6):
                for args in iptables_publish(self.docker, self.bridge, p, v6=v6,
                                             first_for_ctr=p.ctr not in seen):
                    self.iptables(*args, v6=v6)
                seen.add(p.ctr)

    def nft(self, script: str) -> None:
        self.host.run(["nft", "-f", "-"], input=script)

    def publish(self, host_port: int, ctr_port: int, proto: Proto = "tcp",
                host_ip: str | None = None) -> None:
        """Add the rules `docker run -p [host_ip:]host_port:ctr_port/proto` adds (both families
        unless host_ip picks one), in the order this generation of Docker adds them."""
        self.published.append((host_port, ctr_port, proto, host_ip))
        if self.docker == "29-nftables":
            self.nft(nftables_publish_script(self._bridges(False), self._bridges(True)))
            return
        for v6 in (False, True):
            if host_ip is not None and (":" in host_ip) != v6:
                continue
            ctr = CTR_V6 if v6 else CTR_V4
            for args in iptables_publish(self.docker, self.bridge,
                                         Published(ctr, host_port, ctr_port, proto, host_ip),
                                         v6=v6, first_for_ctr=len(self._published(v6)) == 1):
                self.iptables(*args, v6=v6)

    def cleanup(self) -> None:
        t0 = time.monotonic()
        errors: list[str] = []
        for server in [*self.servers, self._server]:
            if server is not None:
                _kill_wait(server.pid, 5, server)
                if server.stdout is not None:
                    server.stdout.close()
        self._server, self.servers = None, []
        self._teardown_topology(errors)
        self.timings["down"] = time.monotonic() - t0
        if errors:
            raise LabError("KernelLab cleanup: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# --------------------------------------------------------------------------- DockerLab

# Trap TERM so `docker stop` returns at once (busybox httpd as PID 1 ignores it: 10 s each).
_WEB_CMD = "trap 'exit 0' TERM; {servers}wait"


def _busybox_tar() -> bytes:
    """A root filesystem of static busybox and all its applets (no registry is reachable)."""
    busybox = Path("/bin/busybox")
    ldd = _run(["ldd", busybox.as_posix()], check=False) if busybox.exists() else None
    if ldd is None or "not a dynamic" not in ldd.stdout + ldd.stderr:
        raise LabError("/bin/busybox must be the static build (apt-get install busybox-static)")
    applets = _run([busybox.as_posix(), "--list"]).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox.as_posix(), arcname="bin/busybox")
        for name in applets:
            if name == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for d in ("tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
    return buf.getvalue()


PortSpec = int | tuple[str, int] | None


# The cgroup2 hierarchy: /sys/fs/cgroup/unified on a hybrid host (this machine), else the root.
CGROUP2 = next((p for p in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
                if (p / "cgroup.procs").exists()), Path("/sys/fs/cgroup"))


class DockerLab(_Topology):
    """A real dockerd in HOST, with trusted and attacker neighbours. `engine` picks which Docker
    (tests/engines.py; default: FWSYNC_ENGINE, else the machine's 20.10): a fetched engine's
    bin/ goes first on PATH for dockerd and everything it starts, and the daemon must report
    that version or the lab refuses to start."""

    def __init__(self, *, ipv6: bool = False, import_image: bool = True,
                 extra_args: Sequence[str] = (), engine: Engine | str | None = None,
                 dockerd_env: Mapping[str, str] | None = None, own_cgroup: bool = False
                 ) -> None:
        # Resolved before the directory is made: an unknown name raises with nothing to undo.
        self.engine = _engine(engine)
        super().__init__()
        self.ipv6, self.import_image, self.extra_args = ipv6, import_image, tuple(extra_args)
        # dockerd started in a cgroup of its own, as systemd's docker.service runs it (below
        # the cgroup2 root; removed at cleanup): its sockets and docker-proxy's are in it from
        # the start. Else it shares the test runner's.
        self.cgroup: str | None = None
        if own_cgroup:
            self.cgroup = f"fwsync-lab-{self.dir.name}/docker.service"
        # Extra environment for dockerd (e.g. Docker 28's DOCKER_INSECURE_NO_IPTABLES_RAW=1).
        self.dockerd_env = dict(dockerd_env or {})
        self.version = ""  # what the running dockerd reports (GET /version), e.g. "28.5.2"
        self.containers: list[str] = []  # names run_web created
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._client: DockerClient | None = None
        self.started_pids: list[int] = []

    @property
    def docker_host(self) -> str:
        return f"unix://{self.dir}/docker.sock"

    @property
    def log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def pid(self) -> int | None:
        """The running dockerd's pid (from its pid file), or None."""
        return self._pid

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            raise LabError("dockerd is not running")
        return self._client

    @property
    def env(self) -> dict[str, str]:
        """The environment dockerd runs in: the engine's programs first on PATH."""
        bin_dir = self.engine.bin_dir()
        if bin_dir is None:
            return {**_ENV, **self.dockerd_env}
        return {**_ENV, "PATH": f"{bin_dir}:{_ENV['PATH']}", **self.dockerd_env}

    def start(self) -> Self:
        t0 = time.monotonic()
        try:
            problems = engine_problems(self.engine)
            if problems:
                raise LabUnavailable("; ".join(problems))
            self._build_topology()
            # A fresh namespace inherits ip_forward from the root one: 0 makes dockerd turn it on
            # and set FORWARD DROP, as on a real host.
            set_forwarding(self.host, False)
            self.timings["namespaces"] = time.monotonic() - t0
            self.start_dockerd()
            if self.import_image:
                t1 = time.monotonic()
                self.ensure_image()
                self.timings["image"] = time.monotonic() - t1
        except BaseException:
            with contextlib.suppress(LabError):
                self.cleanup()
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def dockerd_argv(self) -> list[str]:
        d = self.dir
        argv = ["dockerd", "--data-root", f"{d}/root", "--exec-root", f"{d}/exec",
                "-p", f"{d}/docker.pid", "-H", self.docker_host,
                "--bip", f"{BRIDGE_V4}/25", "--default-address-pool", DOCKER_POOL]
        if self.ipv6:
            argv += ["--ipv6", "--fixed-cidr-v6", CTR_NET_V6, "--experimental", "--ip6tables"]
        return argv + list(self.extra_args)

    def start_dockerd(self, timeout: float | None = None) -> None:
        """Start dockerd and wait until it answers (the engine's start_timeout by default: 28.5
        with restart=always containers takes far longer than 20.10), then check its version."""
        import docker
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        if self._proc is not None:
            raise LabError("dockerd already running")
        timeout = self.engine.start_timeout if timeout is None else timeout
        t0 = time.monotonic()
        argv = self.dockerd_argv()
        if self.cgroup is not None:
            where = CGROUP2 / self.cgroup
            where.mkdir(parents=True, exist_ok=True)
            # The shell moves itself in, then becomes dockerd (same pid).
            argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(where), *argv]
        with open(self.log, "ab") as log:
            self._proc = self.host.spawn(["setsid", *argv], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=self.env)
        self.started_pids.append(self._proc.pid)
        deadline = t0 + timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise LabError(f"dockerd exited at start:\n{self._log_tail()}")
            client = None
            try:
                client = docker.DockerClient(base_url=self.docker_host, timeout=30)
                client.ping()
                break
            except (DockerException, RequestException, OSError):
                if client is not None:
                    client.close()
                if time.monotonic() > deadline:
                    self.stop_dockerd()
                    raise LabError(f"dockerd did not answer in {timeout}s:\n{self._log_tail()}"
                                   ) from None
                time.sleep(0.05)
        self._client = client
        self._pid = int((self.dir / "docker.pid").read_text().strip())
        key = "dockerd_restart" if "dockerd_start" in self.timings else "dockerd_start"
        self.timings[key] = time.monotonic() - t0
        # `docker version`'s server line: a wrong engine on PATH must fail loudly, not test
        # something else under this engine's name.
        self.version = str(client.version().get("Version", ""))
        if not self.engine.matches(self.version):
            self.stop_dockerd()
            raise LabError(f"dockerd reports version {self.version!r}, but this lab runs Docker "
                           f"{self.engine.name} (PATH for it: {self.env['PATH']})")

    def stop_dockerd(self, timeout: float | None = None) -> None:
        """SIGTERM dockerd by its pid, wait for it to exit (containers without a restart policy
        are stopped by it, as on a real host). 28.5 can take its full 15 s shutdown timeout."""
        timeout = self.engine.stop_timeout if timeout is None else timeout
        t0 = time.monotonic()
        if self._client is not None:
            self._client.close()
            self._client = None
        pidfile = self.dir / "docker.pid"
        pid = self._pid or (int(pidfile.read_text()) if pidfile.exists() else None)
        if pid is None and self._proc is not None:
            pid = self._proc.pid
        clean = _kill_wait(pid, timeout, self._proc) if pid is not None else True
        if self._proc is not None:
            self._proc.wait(10)
        self._proc, self._pid = None, None
        self.timings["dockerd_stop"] = time.monotonic() - t0
        if not clean:
            raise LabError(f"dockerd {pid} ignored SIGTERM for {timeout}s; killed")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no dockerd.log)"
        # containerd's grpc reconnect chatter buries the one line that says what went wrong.
        return "\n".join([line for line in text if "module=grpc" not in line][-lines:])

    def ensure_image(self) -> str:
        from docker.errors import ImageNotFound

        try:
            self.client.images.get(BUSYBOX_IMAGE)
        except ImageNotFound:
            repo, tag = BUSYBOX_IMAGE.split(":")
            self.client.api.import_image_from_data(_busybox_tar(), repository=repo, tag=tag)
        return BUSYBOX_IMAGE

    def run_web(self, name: str, publish: Mapping[str, PortSpec] | None = None, *,
                publish_all: bool = False, expose: Iterable[str] = (),
                restart_policy: str | Mapping[str, Any] | None = None,
                labels: Mapping[str, str] | None = None, wait: bool = True,
                network: str | None = None) -> Container:
        """`docker run -d [-p ...] [-P] [--network NETWORK]` of busybox httpd on every container
        TCP port named in `publish`/`expose` (default 80). publish values: host port, (host_ip,
        host_port), or None for a random host port. With wait, return once httpd answers on the
        container's own address(es) from HOST (OUTPUT path, so no firewall policy interferes)."""
        publish = dict(publish or {})
        ports = list(dict.fromkeys([*publish, *expose])) or ["80/tcp"]
        tcp_ports = [int(p.split("/")[0]) for p in ports if not p.endswith("/udp")]
        servers = "".join(f"httpd -f -p {p} -h /bin & " for p in tcp_ports)
        api = self.client.api
        policy = {"Name": restart_policy} if isinstance(restart_policy, str) else restart_policy
        host_config = api.create_host_config(port_bindings=publish or None,
                                             publish_all_ports=publish_all,
                                             restart_policy=dict(policy) if policy else None,
                                             network_mode=network)
        exposed = [(int(p.split("/")[0]), p.split("/")[1] if "/" in p else "tcp") for p in ports]
        cid = api.create_container(BUSYBOX_IMAGE, ["/bin/sh", "-c", _WEB_CMD.format(
            servers=servers)], name=name, ports=exposed, host_config=host_config,
            labels=dict(labels or {}), detach=True)["Id"]
        self.containers.append(name)
        api.start(cid)
        ctr = self.client.containers.get(cid)
        if wait:
            nets = (ctr.attrs["NetworkSettings"].get("Networks") or {}).values()
            addrs = [a for n in nets for a in (n.get("IPAddress"), n.get("GlobalIPv6Address")
                                               if self.ipv6 else None)]
            for addr in filter(None, addrs):
                for port in tcp_ports:
                    wait_for(self.host, addr, port, "tcp", "open", timeout=15)
        return ctr

    def host_port(self, ctr: Container, port: str = "80/tcp", v6: bool = False) -> int:
        """The host port Docker bound for a container port (e.g. a random one from -P)."""
        ctr.reload()
        bindings = ctr.attrs["NetworkSettings"]["Ports"].get(port) or []
        for b in bindings:
            if (":" in b["HostIp"]) == v6:
                return int(b["HostPort"])
        raise LabError(f"{ctr.name}: {port} has no {'IPv6' if v6 else 'IPv4'} binding: {bindings}")

    def remove_containers(self, keep: Iterable[str] = ()) -> None:
        keep = set(keep)
        for ctr in self.client.containers.list(all=True):
            if ctr.name not in keep and ctr.id not in keep:
                ctr.remove(force=True)

    def container_ids(self) -> set[str]:
        return {c.id for c in self.client.containers.list(all=True)}

    def cleanup(self) -> None:
        t0 = time.monotonic()
        errors: list[str] = []
        if self._client is not None:
            try:
                self.remove_containers()
            except Exception as exc:  # still stop dockerd and delete everything
                errors.append(f"removing containers: {exc}")
        try:
            self.stop_dockerd()
        except LabError as exc:
            errors.append(str(exc))
        if self.cgroup is not None:
            self._remove_cgroup(errors)
        self._teardown_topology(errors)
        self.timings["down"] = time.monotonic() - t0
        if errors:
            raise LabError("DockerLab cleanup: " + "; ".join(errors))

    def renew_cgroup(self) -> None:
        """With dockerd stopped: its cgroup removed, so that the next start makes a new one
        (a new id, the same path), as systemd does when docker.service restarts."""
        errors: list[str] = []
        self._remove_cgroup(errors)
        if errors:
            raise LabError("; ".join(errors))

    def _remove_cgroup(self, errors: list[str]) -> None:
        """dockerd's cgroup goes once it is empty: what dockerd left running in it (a
        containerd shim on its way out) is moved to the root cgroup first."""
        assert self.cgroup is not None
        where = CGROUP2 / self.cgroup
        for _ in range(50):
            try:
                if where.exists():
                    for pid in (where / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            (CGROUP2 / "cgroup.procs").write_text(pid)
                    where.rmdir()
                if where.parent.exists():
                    where.parent.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        errors.append(f"cannot remove the cgroup {where}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# --------------------------------------------------------------------------- fwsync & snapshots

Lab = KernelLab | DockerLab


def run_fwsync(lab_or_ns: Lab | NsLike, *args: str, rules: Path | None = None,
               env: Mapping[str, str] | None = None, check: bool = False,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m fwsync ARGS` inside HOST. DOCKER_HOST points at the lab's dockerd (a KernelLab
    gets a socket that never exists, so the machine's own dockerd is never consulted), and the
    lock and daemon state files live in the lab's directory so parallel labs share neither."""
    full = {**os.environ, "PATH": _ENV["PATH"]}  # read now: tests may set FWSYNC_* variables
    if isinstance(lab_or_ns, KernelLab | DockerLab):
        ns = lab_or_ns.host
        full["DOCKER_HOST"] = lab_or_ns.docker_host
        full["FWSYNC_LOCK_FILE"] = str(lab_or_ns.dir / "fwsync.lock")
        # The daemon's state file too: /run/fwsync/daemon.json is one per machine, and `status`
        # in this lab must not report another lab's (or the machine's) daemon.
        full["FWSYNC_DAEMON_STATE"] = str(lab_or_ns.dir / "daemon.json")
        # And what Docker last reported (kept for when it cannot be asked): per lab too.
        full["FWSYNC_DOCKER_STATE"] = str(lab_or_ns.dir / "docker.json")
        full["FWSYNC_RULE_ACTIVITY"] = str(lab_or_ns.dir / "rule-activity.json")
        full["FWSYNC_DECISIONS"] = str(lab_or_ns.dir / "decisions.jsonl")
        full["FWSYNC_PENDING"] = str(lab_or_ns.dir / "pending-apply.json")
    else:
        ns = _ns(lab_or_ns)
    if rules is not None:
        full["FWSYNC_RULES"] = str(rules)
    full.update(env or {})
    res = _run([*ns.nsenter_prefix(), sys.executable, "-m", "fwsync", *args], check=False,
               timeout=timeout, env=full)
    if check and res.returncode != 0:
        raise LabError(f"fwsync {' '.join(args)} exited {res.returncode}:\n"
                       f"{res.stderr}{res.stdout}")
    return res


_VOLATILE = [
    (re.compile(r"^# (Generated by|Completed on) .*\n", re.M), ""),
    (re.compile(r"\[\d+:\d+\]"), "[0:0]"),                       # iptables chain counters
    (re.compile(r" packets \d+ bytes \d+"), ""),                 # ipset counters
    (re.compile(r"^(add .*) timeout \d+", re.M), r"\1"),          # ipset remaining timeouts
    (re.compile(r" expires \S+"), ""),                           # nft set element timeouts
]


def ruleset_snapshot(ns: Lab | NsLike, variant: Variant = "nft") -> str:
    """Everything firewall-ish in a namespace, minus timestamps and counters, for byte-for-byte
    before/after comparisons. Legacy tables are read only by name listing (reading a legacy
    table that doesn't exist would create it)."""
    target = ns.host if isinstance(ns, KernelLab | DockerLab) else _ns(ns)
    pre = target.nsenter_prefix()
    parts = []
    for cmd in ([f"iptables-{variant}-save"], [f"ip6tables-{variant}-save"], ["ipset", "save"],
                ["nft", "-s", "list", "ruleset"]):
        out = _run([*pre, *cmd]).stdout
        for pattern, repl in _VOLATILE:
            out = pattern.sub(repl, out)
        parts.append(f"### {' '.join(cmd)}\n{out}")
    if variant == "nft":
        # fwsync writing legacy tables by mistake must show up in the snapshot too.
        listing = _run([*pre, "sh", "-c", "cat /proc/net/ip_tables_names; echo --;"
                        " cat /proc/net/ip6_tables_names"], check=False).stdout.split("--")
        v4, v6 = (",".join(sorted(t.split())) or "-" for t in listing)
        parts.append(f"### legacy tables: ip={v4} ip6={v6}\n")
    return "".join(parts)


def netns_names() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines() if line]


def _engine(eng: Engine | str | None) -> Engine:
    if isinstance(eng, Engine):
        return eng
    return default_engine() if eng is None else engine(eng)
