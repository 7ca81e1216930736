"""The doctor's fact readers: docker inspect documents, /proc files, and a real busy process."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwsync.observe.host_facts import (
    PROXY_COMM,
    container_facts,
    docker_proxies,
    image_facts,
    own_netns,
    parse_proxy_argv,
    sample_proxies,
    swap_total_kb,
)
from tests.proxy_procs import IDLE, process_named_docker_proxy

pytestmark = pytest.mark.unit

# Shaped like dockerd 20.10's `GET /containers/{id}/json` (the fields doctor reads).
INSPECT = {
    "Id": "0123456789abcdef" * 4,
    "Name": "/app",
    "Image": "sha256:" + "e" * 64,
    "Config": {"Image": "fwsync-test/busybox:1",
               "Env": ["DB_URL=postgres://198.51.100.131:5432/x", "EMPTY=", "PATH=/bin"]},
    "HostConfig": {"Memory": 268435456, "RestartPolicy": {"Name": "always",
                                                          "MaximumRetryCount": 0},
                   "AutoRemove": False, "ExtraHosts": ["db:198.51.100.131"]},
    "NetworkSettings": {
        "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                             {"HostIp": "::", "HostPort": "8080"}], "81/tcp": None},
        "Networks": {"bridge": {"IPAddress": "198.51.100.132", "GlobalIPv6Address": ""},
                     "app": {"IPAddress": "203.0.113.130",
                             "GlobalIPv6Address": "2001:db8:d0c::4"}},
    },
}


def test_container_facts_from_inspect() -> None:
    c = container_facts(INSPECT)
    assert (c.name, c.id, c.image, c.memory_limit, c.restart_policy, c.auto_remove) == (
        "app", "0123456789ab", "fwsync-test/busybox:1", 256 << 20, "always", False)
    assert c.env == (("DB_URL", "postgres://198.51.100.131:5432/x"), ("EMPTY", ""),
                     ("PATH", "/bin"))
    assert c.extra_hosts == ("db:198.51.100.131",)
    assert c.addresses == ("198.51.100.132", "2001:db8:d0c::4", "203.0.113.130")
    assert [(p.host_ip, p.host_port, p.container_port) for p in c.ports] == [
        ("0.0.0.0", 8080, 80), ("::", 8080, 80)]


def test_container_facts_without_limits_or_policy() -> None:
    c = container_facts({"Name": "/bare", "Config": {}, "HostConfig": {"Memory": 0}})
    assert (c.memory_limit, c.restart_policy, c.env, c.ports) == (0, "", (), ())


def test_image_facts_from_system_df_and_from_the_image_list() -> None:
    df = image_facts({"Id": "sha256:a", "RepoTags": ["<none>:<none>"], "Size": 10,
                      "SharedSize": 4, "Containers": 2})
    assert (df.tags, df.unique_size, df.containers) == ((), 6, 2)
    listed = image_facts({"Id": "sha256:b", "RepoTags": None, "Size": 10, "SharedSize": -1})
    assert (listed.tags, listed.unique_size, listed.containers) == ((), 10, -1)


# A copy of /proc: the swap state is machine-wide (swapon here would change every other
# process's machine), so these readers are pointed at files we write. The e2e test reads the real
# /proc and, where it is safe, turns a swap file on for real.
def test_swap_from_meminfo(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 24684204 kB\nSwapTotal:       2097148 kB\n")
    assert swap_total_kb(tmp_path) == 2097148


def test_swap_from_proc_swaps_when_meminfo_says_nothing(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")
    (tmp_path / "swaps").write_text(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/swapfile                               file\t\t1048572\t\t0\t\t-2\n"
        "/dev/vdb2                               partition\t\t4\t\t0\t\t-3\n")
    assert swap_total_kb(tmp_path) == 1048576


def test_no_swap_and_unknown_swap(tmp_path: Path) -> None:
    (tmp_path / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    assert swap_total_kb(tmp_path) == 0
    assert swap_total_kb(tmp_path / "missing") is None


def test_the_real_proc_reports_the_machines_swap() -> None:
    meminfo = Path("/proc/meminfo").read_text()
    want = next(int(line.split()[1]) for line in meminfo.splitlines()
                if line.startswith("SwapTotal:"))
    assert swap_total_kb() == want


def test_docker_proxy_arguments() -> None:
    argv = ["/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port",
            "5432", "-container-ip", "172.17.0.2", "-container-port", "80"]
    assert parse_proxy_argv(argv) == {"proto": "tcp", "host-ip": "0.0.0.0", "host-port": "5432",
                                      "container-ip": "172.17.0.2", "container-port": "80"}


def _fake_process(proc: Path, pid: int, comm: str, argv: list[str]) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_text("\0".join(argv) + "\0")


def test_docker_proxies_are_found_by_name(tmp_path: Path) -> None:
    _fake_process(tmp_path, 12, PROXY_COMM, ["/usr/sbin/docker-proxy", "-proto", "udp",
                                             "-host-ip", "::", "-host-port", "53"])
    _fake_process(tmp_path, 13, "dockerd", ["dockerd", "-proto", "tcp", "-host-port", "1"])
    _fake_process(tmp_path, 14, PROXY_COMM, ["docker-proxy", "--help"])
    (tmp_path / "self").mkdir()
    assert docker_proxies(tmp_path) == [(12, {"proto": "udp", "host-ip": "::",
                                              "host-port": "53"})]


def test_sampling_skips_proxies_of_other_network_namespaces(tmp_path: Path) -> None:
    proc = process_named_docker_proxy(tmp_path, IDLE, 61003)
    try:
        found = [pid for pid, _ in docker_proxies(netns="net:[1]")]
        mine = [pid for pid, _ in docker_proxies(netns=own_netns())]
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in found and proc.pid in mine


def test_no_proxies_means_no_wait(tmp_path: Path) -> None:
    waited: list[float] = []
    assert sample_proxies(tmp_path, 5.0, sleep=waited.append) == ()
    assert waited == []
