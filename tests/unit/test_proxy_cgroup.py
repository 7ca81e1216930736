"""Finding dockerd's cgroup (observe/proxy_cgroup.py), the INPUT path's catch-all's only input
from the host. A real unix socket served by this process stands for Docker's (its peer
credentials are this process's), and /proc and the cgroup2 mount are trees under tmp_path:
what this machine's own cgroups are cannot be chosen here. The real thing, dockerd in a cgroup
of its own, is tests/e2e/test_proxy_match.py's."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fwsync.backends.nftables_render import proxy_line
from fwsync.core.observed import ProxyCgroup
from fwsync.observe.proxy_cgroup import find_proxy_cgroup


@pytest.fixture
def docker_sock(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(4)
        yield f"unix://{path}"


def host(tmp_path: Path, own: str, parent: str = "/init.scope",
         below: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A /proc where this process (the socket's peer) is in cgroup `own` and its parent in
    `parent`, and a cgroup2 mount at ROOT/unified (a hybrid host) holding `own`."""
    proc, root = tmp_path / "proc", tmp_path / "sys-fs-cgroup"
    me, ppid = os.getpid(), 4242
    for pid, cgroup, parent_pid in ((me, own, ppid), (ppid, parent, 1)):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(f"1:name=systemd:{cgroup}\n0::{cgroup}\n")
        (proc / str(pid) / "stat").write_text(f"{pid} (a (b) c) S {parent_pid} 1 1 0\n")
    # This process listens on 2376/tcp (dockerd's API over TCP) and has a connected socket.
    (proc / str(me) / "fd").mkdir()
    (proc / str(me) / "fd" / "3").symlink_to("socket:[5555]")
    (proc / str(me) / "fd" / "4").symlink_to("socket:[5556]")
    (proc / str(me) / "net").mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  " \
        "timeout inode\n"
    (proc / str(me) / "net" / "tcp6").write_text(
        head + "   0: 00000000000000000000000000000000:0948 00000000000000000000000000000000:0000"
        " 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n"
        "   1: 0000000000000000FFFF00000100007F:A1B2 0000000000000000FFFF00000100007F:0948"
        " 01 00000000:00000000 00:00000000 00000000     0        0 5556 1 0 100 0 0 10 0\n"
        "   2: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000"
        " 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1 0 100 0 0 10 0\n")
    (proc / "self").mkdir()
    mount = root / "unified"
    (proc / "self" / "mountinfo").write_text(
        f"25 1 0:22 / {root} rw - tmpfs tmpfs rw\n"
        f"35 25 0:30 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n")
    where = mount / own.lstrip("/")
    where.mkdir(parents=True, exist_ok=True)
    for name in below:
        (where / name).mkdir()
    return proc, root


def test_dockerds_own_cgroup_is_found_with_its_level_and_nfts_path(tmp_path: Path,
                                                                   docker_sock: str) -> None:
    proc, root = host(tmp_path, "/system.slice/docker.service")
    found, why = find_proxy_cgroup(docker_sock, proc, tmp_path / "none.pid", root)
    assert (found, why) == (ProxyCgroup("system.slice/docker.service", 2,
                                        "unified/system.slice/docker.service",
                                        own_ports=(("tcp", 2376),)), ""), \
        "its own listener only: not the connection, not another process's 8080 (docker-proxy)"
    assert proxy_line(found) == ('socket cgroupv2 level 2 "unified/system.slice/docker.service"'
                                 ' jump inbound comment "fwsync docker-proxy: any port, '
                                 'published now or later"')


@pytest.mark.parametrize(("own", "parent", "below", "why"), [
    ("/", "/", (), "dockerd runs in the root cgroup"),
    ("/user.slice/session-3.scope", "/user.slice/session-3.scope", (),
     "dockerd shares its cgroup (/user.slice/session-3.scope) with the process that started it"),
    ("/system.slice/docker.service", "/init.scope", ("payload",), "has cgroups below it"),
    ('/system.slice/docker"; flush ruleset; ".service', "/init.scope", (),
     "holds characters fwsync does not write into a rule"),
    ("/system.slice/docker service", "/init.scope", (),
     "holds characters fwsync does not write into a rule"),
])
def test_a_cgroup_that_holds_more_than_docker_proxy_or_is_not_plain_text_is_refused(
        tmp_path: Path, docker_sock: str, own: str, parent: str, below: tuple[str, ...],
        why: str) -> None:
    """Judging the sockets of a cgroup shared with other processes would judge their listeners
    too (the host's sshd in the root cgroup; a shell's session); a path nft's text syntax would
    read as syntax never reaches it."""
    proc, root = host(tmp_path, own, parent, below)
    found, note = find_proxy_cgroup(docker_sock, proc, tmp_path / "none.pid", root)
    assert found is None and why in note, note


def test_docker_over_tcp_or_without_its_socket_gets_no_catch_all(tmp_path: Path) -> None:
    proc, root = host(tmp_path, "/system.slice/docker.service")
    found, why = find_proxy_cgroup("tcp://203.0.113.5:2376", proc, tmp_path / "none.pid", root)
    assert found is None and "not a local socket" in why
    found, why = find_proxy_cgroup(f"unix://{tmp_path}/gone.sock", proc, tmp_path / "x", root)
    assert found is None and "cannot tell which process serves" in why


def test_the_renderer_refuses_a_path_that_reached_it_unchecked() -> None:
    assert proxy_line(ProxyCgroup('a"b', 1, 'a"b')) is None
    assert proxy_line(ProxyCgroup("a/b", 0, "a/b")) is None
