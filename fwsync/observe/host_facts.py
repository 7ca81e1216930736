"""What `fwsync doctor` needs to know about a Docker host: the docker SDK and /proc, read once.

The /proc root and the Docker client are parameters so the readers can be pointed at a copy
(tests) or at the real ones (the default)."""

from __future__ import annotations

import itertools
import os
import struct
import time
from pathlib import Path
from typing import Any

from fwsync.core.facts import (
    ContainerFacts,
    ForwardFacts,
    HostFacts,
    ImageFacts,
    ProxyFacts,
    SwarmFacts,
)
from fwsync.core.observed import LinkFacts
from fwsync.importers.ufw import import_ufw, parse_shell_vars
from fwsync.importers.ufw_files import ImportFilesError, read_ufw_files
from fwsync.observe.docker import (
    docker_client,
    networks_of,
    ports_of,
    user_named_endpoints,
    with_endpoints,
)
from fwsync.observe.forward_facts import forward_facts
from fwsync.observe.host_links import read_links
from fwsync.observe.swarm import observe_swarm, swarm_node
from fwsync.rules.model import Policy
from fwsync.rules.syntax import parse_sources

PROC = Path("/proc")
PROXY_COMM = "docker-proxy"


class DockerUnreachable(Exception):
    """Docker could not be asked; the message says where and why."""


# --------------------------------------------------------------------------- Docker


def container_facts(attrs: dict[str, Any]) -> ContainerFacts:
    """From one `docker inspect` document."""
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    addresses = [a for net in networks.values()
                 for a in (net.get("IPAddress"), net.get("GlobalIPv6Address")) if a]
    env = []
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        env.append((key, value))
    return ContainerFacts(
        name=str(attrs.get("Name", "")).lstrip("/"),
        id=str(attrs.get("Id", ""))[:12],
        image=str(config.get("Image", "")),
        image_id=str(attrs.get("Image", "")),
        memory_limit=int(host.get("Memory") or 0),
        restart_policy=str((host.get("RestartPolicy") or {}).get("Name") or ""),
        auto_remove=bool(host.get("AutoRemove")),
        env=tuple(env),
        extra_hosts=tuple(str(h) for h in host.get("ExtraHosts") or []),
        addresses=tuple(sorted(dict.fromkeys(addresses))),
        ports=tuple(sorted(ports_of(attrs))),
    )


def image_facts(entry: dict[str, Any]) -> ImageFacts:
    """From one image of `GET /system/df` (or of the image list, which lacks the sharing)."""
    tags = tuple(t for t in entry.get("RepoTags") or [] if t != "<none>:<none>")
    return ImageFacts(id=str(entry.get("Id", "")), tags=tags, size=int(entry.get("Size") or 0),
                      shared_size=int(entry.get("SharedSize", -1)),
                      containers=int(entry.get("Containers", -1)))


def observe_docker_host(client: Any) -> tuple[tuple[ContainerFacts, ...],
                                              tuple[ImageFacts, ...]]:
    """Running containers (inspected: limits, environment, addresses) and top-level images."""
    from docker.errors import APIError, NotFound
    from requests.exceptions import ReadTimeout

    found = []
    for summary in client.api.containers():
        try:
            found.append(container_facts(client.api.inspect_container(summary["Id"])))
        except NotFound:
            continue  # removed since it was listed
    containers = tuple(found)
    try:
        # What `docker system df` shows: the only place that says how much of an image's size
        # is shared with other images, and how many containers use it.
        images = client.api.df().get("Images") or []
    except (APIError, ReadTimeout):  # an old or slow daemon: the plain list still finds them
        images = client.api.images()
    return containers, tuple(image_facts(i) for i in images)


# --------------------------------------------------------------------------- /proc


def swap_total_kb(proc: Path = PROC) -> int | None:
    """SwapTotal from meminfo, else the sizes in /proc/swaps; None if neither can be read."""
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("SwapTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        rows = (proc / "swaps").read_text().splitlines()[1:]  # the first line is a header
        return sum(int(row.split()[2]) for row in rows if row.strip())
    except (OSError, ValueError, IndexError):
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None  # the process ended, or we may not look


def _cpu_ticks(proc: Path, pid: int) -> int | None:
    stat = _read(proc / str(pid) / "stat")
    if stat is None:
        return None
    # Fields after the parenthesised command (which may itself hold spaces and parentheses).
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    except (IndexError, ValueError):
        return None


def _netns(proc: Path, pid: str) -> str | None:
    try:
        return os.readlink(proc / pid / "ns" / "net")
    except OSError:
        return None


def parse_proxy_argv(argv: list[str]) -> dict[str, str]:
    """docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 5432 -container-ip ... ."""
    flags: dict[str, str] = {}
    for flag, value in itertools.pairwise(argv[1:]):
        if flag.startswith("-") and not value.startswith("-"):
            flags[flag.lstrip("-")] = value
    return flags


def docker_proxies(proc: Path = PROC, netns: str | None = None) -> list[tuple[int, dict[str, str]]]:
    """(pid, flags) of every docker-proxy, only those in network namespace `netns` if given
    (several dockerds may run on one machine, each in its own namespace)."""
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or (_read(entry / "comm") or "").strip() != PROXY_COMM:
            continue
        if netns is not None and _netns(proc, entry.name) != netns:
            continue
        argv = (_read(entry / "cmdline") or "").split("\0")
        flags = parse_proxy_argv([a for a in argv if a])
        if {"proto", "host-port"} <= flags.keys():
            found.append((int(entry.name), flags))
    return sorted(found)


def sample_proxies(proc: Path = PROC, seconds: float = 1.0, netns: str | None = None,
                   sleep: Any = time.sleep) -> tuple[ProxyFacts, ...]:
    """CPU time each docker-proxy uses over `seconds` (no wait when there is none)."""
    proxies = docker_proxies(proc, netns)
    if not proxies:
        return ()
    ticks = os.sysconf("SC_CLK_TCK")
    before = {pid: _cpu_ticks(proc, pid) for pid, _ in proxies}
    t0 = time.monotonic()
    sleep(seconds)
    elapsed = time.monotonic() - t0
    facts = []
    for pid, flags in proxies:
        start, end = before[pid], _cpu_ticks(proc, pid)
        if start is None or end is None:
            continue  # it ended meanwhile
        try:
            host_port, ctr_port = int(flags["host-port"]), int(flags.get("container-port", 0))
        except ValueError:
            continue
        facts.append(ProxyFacts(
            pid=pid, proto=flags["proto"], host_ip=flags.get("host-ip", ""),
            host_port=host_port, container_ip=flags.get("container-ip", ""),
            container_port=ctr_port, cpu_seconds=(end - start) / ticks, interval=elapsed))
    return tuple(facts)


def own_netns(proc: Path = PROC) -> str | None:
    """The network namespace this process runs in: the Docker host's, when run on it."""
    return _netns(proc, "self")


# --------------------------------------------------------------------------- Swarm and ufw

UFW_DIR, UFW_DEFAULTS = Path("/etc/ufw"), Path("/etc/default/ufw")


def ufw_policy(ufw_dir: Path = UFW_DIR, default_file: Path = UFW_DEFAULTS
               ) -> tuple[Policy | None, str]:
    """ufw's rules and incoming policy as an fwsync Policy (the importer's translation: its
    verdicts for a port are ufw's for the host's own port), or None and why not."""
    try:
        files = read_ufw_files(ufw_dir, default_file)
    except ImportFilesError as exc:
        return None, f"ufw's rules could not be read ({exc}): the ports Swarm needs are not checked"
    if parse_shell_vars(files.ufw_conf or "").get("ENABLED", "no").lower() != "yes":
        return None, ""  # ufw is off: it refuses nothing
    result = import_ufw(files)
    parsed = parse_sources([(files.user_rules_name, result.text)], _no_lists)
    if parsed.policy is None:
        return None, "ufw's rules could not be translated: the ports Swarm needs are not checked"
    return parsed.policy, ""


def _no_lists(path: str) -> str:
    raise FileNotFoundError(2, "the ufw importer writes no `define ... file`", path)


def swarm_facts(client: Any, ufw_dir: Path = UFW_DIR, default_file: Path = UFW_DEFAULTS
                ) -> SwarmFacts | None:
    """This node's place in a Swarm (None: in none), the nodes it must reach, the services' mesh
    ports, and ufw's policy. A manager lists every node; a worker knows the managers."""
    info = client.api.info()
    node = swarm_node(info)
    if node is None:
        return None
    view = observe_swarm(client, node, client.api.networks())
    node = view.node or node
    if node.manager:
        addrs = [str((n.get("Status") or {}).get("Addr") or "") for n in client.api.nodes()]
    else:
        addrs = [str(m.get("Addr") or "").rsplit(":", 1)[0]
                 for m in (info.get("Swarm") or {}).get("RemoteManagers") or []]
    peers = tuple(sorted({a.strip("[]") for a in addrs}
                         - {"", "0.0.0.0", "::", node.node_addr}))
    ufw, note = ufw_policy(ufw_dir, default_file)
    return SwarmFacts(manager=node.manager, node_addr=node.node_addr, peers=peers,
                      mesh=view.ports, services=view.services, ufw=ufw, ufw_note=note)


# --------------------------------------------------------------------------- together


def gather_host_facts(*, client: Any = None, proc: Path = PROC, sample_seconds: float = 1.0,
                      timeout: int = 60) -> HostFacts:
    """Everything doctor checks. Raises DockerUnreachable when Docker can't be asked; /proc
    problems only mark the checks that needed it as unavailable."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    own = client is None
    try:
        if own:
            client = docker_client(timeout)
        try:
            containers, images = observe_docker_host(client)
            swarm = swarm_facts(client)
            listed = client.api.networks()
            networks = with_endpoints(
                networks_of(listed, str(getattr(client.api, "api_version", "") or "")),
                user_named_endpoints(listed, client.api.inspect_network))
        finally:
            if own:
                client.close()
    except (DockerException, RequestException, OSError) as exc:
        where = os.environ.get("DOCKER_HOST") or "the local socket"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DockerUnreachable(f"cannot reach Docker at {where}: {text[:160]}") from exc
    unavailable: dict[str, str] = {}
    swap = swap_total_kb(proc)
    if swap is None:
        unavailable["no-swap"] = f"cannot read {proc}/meminfo or {proc}/swaps"
    proxies: tuple[ProxyFacts, ...] | None = None
    if sample_seconds <= 0:
        unavailable["docker-proxy-cpu"] = "sampling switched off (--sample 0)"
    elif proc.is_dir():
        proxies = sample_proxies(proc, sample_seconds, own_netns(proc))
    else:
        unavailable["docker-proxy-cpu"] = f"{proc} is not readable"
    forward: ForwardFacts | None = None
    try:
        forward = forward_facts(proc)
    except (OSError, ImportError) as exc:
        unavailable["nftables-forward-drop"] = f"cannot read the kernel's firewall: {exc}"
    try:
        links: tuple[LinkFacts, ...] | None = read_links()
    except (OSError, struct.error, ValueError) as exc:
        links = None
        unavailable["untrusted-bridge"] = f"cannot read the host's interfaces: {exc}"
    return HostFacts(containers=containers, images=images, swap_total_kb=swap, proxies=proxies,
                     forward=forward, swarm=swarm, networks=networks, links=links,
                     unavailable=unavailable)
