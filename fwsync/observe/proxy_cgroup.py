"""dockerd's own cgroup, read from the kernel: the nftables backend's INPUT-path catch-all
matches "a new connection to a socket of a process in it" (`socket cgroupv2`), which is every
port docker-proxy serves, published now or later, and no listener of the host's.

dockerd is the process that serves Docker's socket: its peer credentials (SO_PEERCRED), or,
where systemd made the socket (docker.socket: the peer is then pid 1), the pid in dockerd's pid
file, checked to hold that very socket. Nothing a Docker user names is used.

The cgroup is refused (None, and why) where judging its sockets would judge more than
docker-proxy's: the root cgroup, one dockerd shares with the process that started it (a shell's
session: its other listeners), one with cgroups below it. Then fwsync says, as before, that a
port published later is judged on the INPUT path from the next apply on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from dataclasses import replace
from pathlib import Path

from fwsync.core.kernel_text import cgroup_path_problem
from fwsync.core.observed import DockerState, L4Proto, ProxyCgroup

NFT_CGROUP_ROOT = Path("/sys/fs/cgroup")  # where nft resolves a `socket cgroupv2` path
PID_FILE = Path("/var/run/docker.pid")  # dockerd's default --pidfile
PROC = Path("/proc")


def with_proxy_cgroup(state: DockerState, docker_host: str | None) -> DockerState:
    """`state` with dockerd's cgroup (or why there is none). Docker must have answered."""
    if state.error is not None:
        return replace(state, proxy_cgroup=None, proxy_cgroup_note="Docker could not be asked")
    found, note = find_proxy_cgroup(docker_host)
    return replace(state, proxy_cgroup=found, proxy_cgroup_note=note)


def find_proxy_cgroup(docker_host: str | None, proc: Path = PROC, pid_file: Path = PID_FILE,
                      nft_root: Path = NFT_CGROUP_ROOT) -> tuple[ProxyCgroup | None, str]:
    host = docker_host or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return None, f"Docker is asked over {host.split(':')[0]}, not a local socket"
    path = host.removeprefix("unix://")
    try:
        pid = _dockerd_pid(path, proc, pid_file)
    except OSError as exc:
        return None, f"cannot tell which process serves {path}: {exc.strerror or exc}"
    if pid is None:
        return None, f"cannot tell which process serves {path}"
    try:
        own = _cgroup_of(proc, pid)
        parent = _cgroup_of(proc, _ppid(proc, pid))
        mount = _cgroup2_mount(proc)
    except (OSError, ValueError) as exc:
        return None, f"cannot read dockerd's cgroup (pid {pid}): {exc}"
    if own is None or mount is None:
        return None, "the host has no cgroup2 hierarchy"
    if own == "/":
        return None, "dockerd runs in the root cgroup: its sockets are every process's"
    if own == parent:
        return None, (f"dockerd shares its cgroup ({own}) with the process that started it: "
                      "that cgroup's other listeners would be judged too")
    where = mount / own.lstrip("/")
    try:
        below = [d.name for d in where.iterdir() if d.is_dir()]
    except OSError as exc:
        return None, f"cannot read {where}: {exc.strerror or exc}"
    if below:
        return None, f"dockerd's cgroup ({own}) has cgroups below it ({below[0]})"
    try:
        nft_path = where.relative_to(nft_root)
    except ValueError:
        return None, f"cgroup2 is mounted at {mount}, outside {nft_root} where nft looks"
    rel = own.strip("/")
    if (problem := cgroup_path_problem(str(nft_path))) is not None:
        return None, f"dockerd's cgroup: {problem}"
    try:
        ports = _own_ports_cached(proc, pid)
    except (OSError, ValueError) as exc:
        return None, f"cannot read what dockerd (pid {pid}) listens on: {exc}"
    return ProxyCgroup(path=rel, level=len(rel.split("/")), nft_path=str(nft_path),
                       own_ports=ports), ""


# (proc, pid) → (when read, its ports): what dockerd listens on is set when it starts (its API)
# or when the node joins a Swarm (whose usual ports are exempt anyway), and /proc/PID/net/tcp
# lists every connection of the namespace (megabytes on a busy host), so the daemon reads it
# once a minute per dockerd, not at every Docker event.
_OWN_PORTS: dict[tuple[Path, int], tuple[float, tuple[tuple[L4Proto, int], ...]]] = {}
OWN_PORTS_TTL = 60.0


def _own_ports_cached(proc: Path, pid: int) -> tuple[tuple[L4Proto, int], ...]:
    now = time.monotonic()
    kept = _OWN_PORTS.get((proc, pid))
    if kept is not None and now - kept[0] < OWN_PORTS_TTL:
        return kept[1]
    ports = own_ports(proc, pid)
    if len(_OWN_PORTS) > 8:
        _OWN_PORTS.clear()
    _OWN_PORTS[(proc, pid)] = (now, ports)
    return ports


def own_ports(proc: Path, pid: int) -> tuple[tuple[L4Proto, int], ...]:
    """The ports process `pid` itself listens on (TCP) or is bound to (UDP), in its network
    namespace: dockerd's API over TCP, a Swarm node's ports. Not its children's (docker-proxy)."""
    inodes = set()
    for fd in (proc / str(pid) / "fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found: set[tuple[L4Proto, int]] = set()
    for proto, files in (("tcp", ("tcp", "tcp6")), ("udp", ("udp", "udp6"))):
        for name in files:
            table = proc / str(pid) / "net" / name
            if not table.exists():
                continue
            for line in table.read_text().splitlines()[1:]:
                f = line.split()
                # sl local rem st ... inode (the 10th field); TCP's 0A is LISTEN
                if len(f) > 9 and f[9] in inodes and (proto == "udp" or f[3] == "0A"):
                    found.add(("tcp" if proto == "tcp" else "udp",
                               int(f[1].rsplit(":", 1)[1], 16)))
    return tuple(sorted(found))


def _dockerd_pid(path: str, proc: Path, pid_file: Path) -> int | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(path)
        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", raw)[0]
    if pid > 1:
        return pid
    # systemd made the socket (socket activation) and passed it to dockerd.
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _holds_listener(proc, pid, path) else None


def _holds_listener(proc: Path, pid: int, path: str) -> bool:
    """Whether process `pid` holds the listening unix socket bound at `path`."""
    inodes = set()
    for line in (proc / "net" / "unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; flags 00010000: listening
        if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
            inodes.add(f"socket:[{fields[6]}]")
    for fd in (proc / str(pid) / "fd").iterdir():
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


def _cgroup_of(proc: Path, pid: int) -> str | None:
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _ppid(proc: Path, pid: int) -> int:
    stat = (proc / str(pid) / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then ppid


def _cgroup2_mount(proc: Path) -> Path | None:
    for line in (proc / "self" / "mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    return None
