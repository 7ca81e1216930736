"""The doctor's checks: pure functions from observed facts (and the rules) to findings."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace

from fwsync.core.audit import AUDIT_VERDICT, audit_problem, default_audited, enforced_default
from fwsync.core.bridges import judge_bridges
from fwsync.core.build import build_ruleset
from fwsync.core.enforcing import Enforcement
from fwsync.core.explain import Connection, decide
from fwsync.core.facts import (
    DOCKER_NFT_TABLE,
    ContainerFacts,
    ForwardFacts,
    HostFacts,
    ImageFacts,
    ProxyFacts,
    SwarmFacts,
)
from fwsync.core.kernel_text import shown
from fwsync.core.networks import IPTABLES_GAP
from fwsync.core.observed import DockerNetwork, DockerState, LinkFacts, PublishedPort
from fwsync.core.port_decisions import Decision, decisions_for
from fwsync.core.ruleset import L4, Ruleset
from fwsync.doctor.facts import Finding, Report, Severity
from fwsync.rules.model import Policy

# Services that belong on an internal network, by their well-known port.
INTERNAL_PORTS: dict[int, str] = {
    1433: "SQL Server", 1521: "Oracle", 2181: "ZooKeeper", 2375: "the Docker API",
    2376: "the Docker API", 2379: "etcd", 2380: "etcd peers", 3306: "MySQL/MariaDB",
    4369: "Erlang epmd", 5432: "PostgreSQL", 5672: "RabbitMQ", 5984: "CouchDB",
    6379: "Redis", 7000: "Cassandra", 7687: "Neo4j", 8086: "InfluxDB", 8123: "ClickHouse",
    8500: "Consul", 9000: "ClickHouse", 9042: "Cassandra", 9092: "Kafka",
    9200: "Elasticsearch", 9300: "Elasticsearch", 11211: "memcached", 15672: "RabbitMQ admin",
    26257: "CockroachDB", 27017: "MongoDB", 27018: "MongoDB", 27019: "MongoDB",
}
# ... and by the image's name (its last path component, without tag), as a prefix.
INTERNAL_IMAGES: dict[str, str] = {
    "postgres": "PostgreSQL", "postgis": "PostgreSQL", "timescaledb": "PostgreSQL",
    "mysql": "MySQL", "mariadb": "MariaDB", "percona": "MySQL", "redis": "Redis",
    "valkey": "Valkey", "keydb": "KeyDB", "mongo": "MongoDB", "memcached": "memcached",
    "elasticsearch": "Elasticsearch", "opensearch": "OpenSearch", "couchdb": "CouchDB",
    "couchbase": "Couchbase", "etcd": "etcd", "rabbitmq": "RabbitMQ", "cassandra": "Cassandra",
    "scylla": "ScyllaDB", "influxdb": "InfluxDB", "kafka": "Kafka", "zookeeper": "ZooKeeper",
    "mssql": "SQL Server", "clickhouse": "ClickHouse", "cockroach": "CockroachDB",
    "neo4j": "Neo4j",
}
PROXY_CPU_SHARE = 0.10  # a docker-proxy above 10% of a core is copying real traffic
IMAGES_WARN_BYTES = 1 << 30  # dangling images holding 1 GiB or more are worth a warning


@dataclass(frozen=True)
class Rules:
    """The rules as doctor sees them: a policy, or why there is none."""

    policy: Policy | None
    problem: str | None = None  # e.g. "/etc/fwsync/rules: no such file" (when policy is None)
    path: str = ""


def binding(port: PublishedPort) -> str:
    host = f"[{port.host_ip}]" if port.family == 6 else port.host_ip
    return f"{host}:{port.host_port}/{port.proto}"


def _port_subject(port: PublishedPort, host_ips: Iterable[str] = ()) -> str:
    ips = list(host_ips) or [port.host_ip]
    bindings = ", ".join(binding(replace(port, host_ip=ip)) for ip in ips)
    if port.service and not port.container:  # a Swarm service's mesh port
        return f"{bindings} → service {shown(port.service)}:{port.container_port} (ingress mesh)"
    return f"{bindings} → {port.container}:{port.container_port}"


def _port_details(port: PublishedPort) -> dict[str, str | int | float | list[str]]:
    details: dict[str, str | int | float | list[str]] = {
        "container": port.container, "host_ips": [port.host_ip], "host_port": port.host_port,
        "proto": port.proto, "container_port": port.container_port, "image": port.image}
    if port.service:
        details.update(swarm_service=port.service, publish_mode=port.mode)
    return details


def _merge_bindings(pairs: list[tuple[PublishedPort, Finding]]) -> list[Finding]:
    """One finding for a port Docker publishes on 0.0.0.0 and :: alike, not two."""
    merged: dict[tuple[object, ...], tuple[PublishedPort, Finding, list[str]]] = {}
    for port, f in pairs:
        rest = tuple(sorted((k, str(v)) for k, v in f.details.items() if k != "host_ips"))
        key = (f.check, f.severity, f.message, f.fix, rest)
        if key in merged:
            merged[key][2].append(port.host_ip)
        else:
            merged[key] = (port, f, [port.host_ip])
    return [replace(f, subject=_port_subject(port, ips), details={**f.details, "host_ips": ips})
            for port, f, ips in merged.values()]


def _is_loopback(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip).is_loopback
    except ValueError:
        return False


def _published(containers: Iterable[ContainerFacts], mesh: Iterable[PublishedPort] = ()
               ) -> list[PublishedPort]:
    """The containers' bindings and the Swarm services' mesh ports (no container holds those)."""
    return sorted([*(p for c in containers for p in c.ports), *mesh])


# --------------------------------------------------------------------------- the checks


def _decide(containers: Iterable[ContainerFacts], policy: Policy,
            mesh: Iterable[PublishedPort] = ()) -> Callable[[PublishedPort], list[Decision]]:
    """decisions_for over the ruleset built for these containers' bindings (and the services'
    mesh ports): the matcher status and explain use (fwsync.core.matching)."""
    listed = list(containers)
    docker = DockerState(ports=tuple(_published(listed, mesh)),
                         containers=tuple(c.name for c in listed))
    ruleset = build_ruleset(policy, docker).ruleset
    return lambda port: decisions_for(policy, ruleset, port)


def check_ungoverned_ports(containers: Iterable[ContainerFacts], rules: Rules,
                           mesh: Iterable[PublishedPort] = ()) -> list[Finding]:
    """Published ports that no rule names: only the default decides (or nothing, without rules).
    `mesh`: the Swarm services' ingress ports, published on this node as on every other."""
    findings: list[tuple[PublishedPort, Finding]] = []
    containers, mesh = list(containers), list(mesh)
    decide = _decide(containers, rules.policy, mesh) if rules.policy is not None else None
    for port in _published(containers, mesh):
        if rules.policy is None:
            if _is_loopback(port.host_ip):
                continue  # other hosts can't reach it through Docker's DNAT
            findings.append((port, Finding(
                "ungoverned-port", "serious", _port_subject(port),
                f"no fwsync rules loaded ({rules.problem}): nothing filters this port, and "
                "Docker's DNAT bypasses ufw's INPUT rules, so anyone who can route to this "
                "host can connect",
                f"write rules that say who may reach port {port.host_port} "
                f"(`fwsync check {rules.path or 'RULES'}`), then `fwsync apply`",
                _port_details(port))))
            continue
        assert decide is not None
        # An audited rule or default decides nothing (core/audit): not part of the question.
        decisions = [d for d in decide(port) if not d.action.startswith(AUDIT_VERDICT)]
        default_origin = str(rules.policy.default_origin or "built-in default")
        if len(decisions) != 1 or decisions[0].origin != default_origin:
            continue  # a rule or a protection decides
        default = enforced_default(rules.policy)
        severity: Severity
        if default_audited(rules.policy):
            severity, what = "warning", (f"the default `{rules.policy.default}` is audited "
                                         "(`mode audit`): it lets anyone connect")
        elif default == "allow":
            severity, what = "warning", "the default `allow` lets anyone connect"
        else:
            severity, what = "info", f"the default `{default}` refuses everyone"
        findings.append((port, Finding(
            "ungoverned-port", severity, _port_subject(port),
            f"no rule names this port; only the default decides: {what}",
            f"add a rule for port {port.host_port} that says who may connect (e.g. `allow from "
            f"198.51.100.0/24 to any port {port.host_port} proto {port.proto}`), or stop "
            "publishing it if nobody outside should reach it",
            {**_port_details(port), "default": default})))
    return _merge_bindings(findings)


def internal_service(port: PublishedPort) -> str | None:
    """What internal service this binding looks like, by port or by image name; None if none."""
    for number in (port.container_port, port.host_port):
        if number in INTERNAL_PORTS:
            return INTERNAL_PORTS[number]
    name = port.image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0].lower()
    return next((svc for prefix, svc in INTERNAL_IMAGES.items() if name.startswith(prefix)),
                None)


def check_internal_ports(containers: Iterable[ContainerFacts], rules: Rules,
                         mesh: Iterable[PublishedPort] = ()) -> list[Finding]:
    """Databases and caches published on every host address (or on the Swarm mesh)."""
    findings: list[tuple[PublishedPort, Finding]] = []
    containers, mesh = list(containers), list(mesh)
    decide = _decide(containers, rules.policy, mesh) if rules.policy is not None else None
    for port in _published(containers, mesh):
        service = internal_service(port)
        if service is None or not port.all_addresses:
            continue
        if decide is None:
            open_to_all, who = True, "no fwsync rules are loaded, so anyone may connect"
        else:
            last = decide(port)[-1]
            open_to_all = last.action in ("allow", "limit")
            who = (f"{last.who} may connect ({last.origin})" if open_to_all
                   else "fwsync's rules restrict it, but one mistake or a stopped fwsync opens it")
        findings.append((port, Finding(
            "internal-port-exposed", "serious" if open_to_all else "warning",
            _port_subject(port),
            f"looks like {service} and is published on all addresses; {who}",
            f"publish it on loopback only (`-p 127.0.0.1:{port.host_port}:"
            f"{port.container_port}`) or not at all, and let other containers reach it by name "
            "on a user-defined network; if other hosts need it, allow only them",
            {**_port_details(port), "service": service})))
    return _merge_bindings(findings)


def check_memory_limits(containers: Iterable[ContainerFacts]) -> list[Finding]:
    return [Finding(
        "no-memory-limit", "warning", c.name,
        "runs without a memory limit: a leak or a spike can use all of the host's memory, and "
        "the kernel's OOM killer then picks any process (dockerd, sshd, another container)",
        f"set a limit (`docker update --memory 512m --memory-swap 1g {c.name}`, or "
        "`mem_limit` / `deploy.resources.limits.memory` in compose)",
        {"container": c.name, "image": c.image})
        for c in sorted(containers, key=lambda c: c.name) if c.memory_limit <= 0]


def check_restart_policies(containers: Iterable[ContainerFacts]) -> list[Finding]:
    return [Finding(
        "no-restart-policy", "warning", c.name,
        "has no restart policy: after an OOM kill, a crash or a reboot it stays down",
        f"`docker update --restart unless-stopped {c.name}` (or `restart: unless-stopped` in "
        "compose)", {"container": c.name, "image": c.image})
        for c in sorted(containers, key=lambda c: c.name)
        if c.restart_policy in ("", "no") and not c.auto_remove]


def check_swap(swap_total_kb: int) -> list[Finding]:
    if swap_total_kb > 0:
        return []
    return [Finding(
        "no-swap", "warning", "host",
        "the host has no swap: when memory runs out there is no slack, and the OOM killer "
        "ends processes at once instead of the host slowing down",
        "add a swap file (`fallocate -l 2G /swapfile && chmod 600 /swapfile && mkswap /swapfile "
        "&& swapon /swapfile`, plus a line in /etc/fstab) and give containers memory limits",
        {"swap_total_kb": swap_total_kb})]


def _proxy_target(proxy: ProxyFacts, ports: Iterable[PublishedPort]) -> PublishedPort | None:
    same = [p for p in ports if p.host_port == proxy.host_port and p.proto == proxy.proto]
    exact = [p for p in same if p.host_ip == proxy.host_ip]
    return (exact or same)[0] if same else None


def check_proxy_cpu(proxies: Iterable[ProxyFacts], containers: Iterable[ContainerFacts],
                    threshold: float = PROXY_CPU_SHARE) -> list[Finding]:
    """docker-proxy copies every byte of a connection through user space; it only carries
    traffic the kernel's DNAT does not (loopback, IPv6 without ip6tables, hairpin)."""
    ports = _published(containers)
    findings = []
    for proxy in sorted(proxies, key=lambda p: (-p.cpu_share, p.pid)):
        if proxy.cpu_share < threshold:
            continue
        target = _proxy_target(proxy, ports)
        host = f"[{proxy.host_ip}]" if ":" in proxy.host_ip else proxy.host_ip
        served = f"{host}:{proxy.host_port}/{proxy.proto}"
        to = (f"{target.container}:{target.container_port}" if target
              else f"{proxy.container_ip}:{proxy.container_port}")
        percent = round(proxy.cpu_share * 100, 1)
        findings.append(Finding(
            "docker-proxy-cpu", "warning", f"docker-proxy pid {proxy.pid} for {served} → {to}",
            f"Docker's userland proxy used {percent}% of a CPU core while sampled "
            f"({proxy.interval:.1f} s): every byte to {served} is copied through it",
            "set `\"userland-proxy\": false` in /etc/docker/daemon.json and restart dockerd, so "
            "the kernel's DNAT carries these connections (for IPv6, also `\"ip6tables\": true`); "
            "or have local clients connect to the container over a Docker network instead",
            {"pid": proxy.pid, "host_ip": proxy.host_ip, "host_port": proxy.host_port,
             "proto": proxy.proto, "container": target.container if target else "",
             "container_port": proxy.container_port, "cpu_percent": percent,
             "interval_seconds": proxy.interval}))
    return findings


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # not reached


def check_dangling_images(images: Iterable[ImageFacts],
                          warn_bytes: int = IMAGES_WARN_BYTES) -> list[Finding]:
    """Untagged (dangling) images: the leftovers of a re-pulled or re-built tag."""
    dangling = sorted((i for i in images if not i.tags), key=lambda i: (-i.unique_size, i.id))
    if not dangling:
        return []
    total = sum(i.unique_size for i in dangling)
    in_use = [i for i in dangling if i.containers > 0]
    note = (f"; {len(in_use)} still used by a container (removed only with it)"
            if in_use else "")
    return [Finding(
        "dangling-images", "warning" if total >= warn_bytes else "info",
        f"{len(dangling)} untagged image(s)",
        f"{len(dangling)} untagged (dangling) image(s) hold {_size(total)} of disk"
        f"{note}: {', '.join(i.id.removeprefix('sha256:')[:12] for i in dangling[:10])}"
        + (" ..." if len(dangling) > 10 else ""),
        "`docker image prune` removes the unused ones (check `docker images --filter "
        "dangling=true` first)",
        {"count": len(dangling), "bytes": total, "in_use": len(in_use)})]


_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*")


def addresses_in(text: str) -> list[str]:
    """IP addresses written in a string (URLs, host:port, lists), normalised."""
    found = []
    for token in [*_IPV4.findall(text), *_IPV6_CANDIDATE.findall(text)]:
        try:
            found.append(str(ipaddress.ip_address(token.strip("[]"))))
        except ValueError:
            continue
    return found


def check_env_container_ips(containers: Iterable[ContainerFacts]) -> list[Finding]:
    """Another container's address written into a container's config goes stale: Docker hands
    out addresses anew on every start."""
    listed = sorted(containers, key=lambda c: c.name)
    owner = {ipaddress.ip_address(a).compressed: c.name for c in listed for a in c.addresses}
    findings = []
    for c in listed:
        own = {ipaddress.ip_address(a).compressed for a in c.addresses}
        places = [(f"environment variable {k}", k, v) for k, v in c.env]
        places += [(f"--add-host {h.split(':', 1)[0]}", f"--add-host {h.split(':', 1)[0]}", h)
                   for h in c.extra_hosts]
        for where, key, value in places:
            for addr in dict.fromkeys(addresses_in(value)):
                other = owner.get(addr)
                if other is None or addr in own:
                    continue
                findings.append(Finding(
                    "env-container-ip", "warning", f"{c.name}: {key}",
                    f"{where} holds {addr}, the current address of container {other}: it "
                    f"breaks when {other} restarts and gets another address",
                    f"put {c.name} and {other} on one user-defined network (`docker network "
                    f"create app; docker network connect app {other}; ...`) and use the name "
                    f"`{other}` instead of the address",
                    {"container": c.name, "variable": key, "address": addr, "owner": other}))
    return findings


def check_nftables_forward_drop(forward: ForwardFacts) -> list[Finding]:
    """Docker's nftables firewall (firewall-backend nftables, Docker 29) behind another
    firewall's forward chain with a drop policy: ufw's default. Docker's accept ends only its own
    chain; the other chain still drops the packet, so published ports stop answering."""
    findings = []
    for family in forward.docker_nftables:
        chains = forward.drops(family)
        if not chains:
            continue
        table = f"{family} {DOCKER_NFT_TABLE}"
        findings.append(Finding(
            "nftables-forward-drop", "warning", f"table {table}",
            f"Docker writes its firewall with nftables (table {table}), and "
            f"{', '.join(chains)} drops forwarded packets by default (ufw's default forward "
            "policy): Docker's accept ends only its own chain, so that chain still drops what "
            f"Docker publishes and no published port answers over "
            f"{'IPv6' if family == 'ip6' else 'IPv4'}",
            "`ufw default allow routed` (DEFAULT_FORWARD_POLICY=\"ACCEPT\" in "
            "/etc/default/ufw): fwsync's rules (nftables backend) then decide who reaches each "
            "published port, and Docker's own chain still drops forwarding it did not set up. "
            "Or run Docker with its iptables firewall backend",
            {"table": table, "chains": list(chains)}))
    return findings


# What Swarm needs between its nodes (Docker's "Getting started with swarm mode" docs): these
# are the host's own ports, on the INPUT path, which the host firewall (ufw) decides, not fwsync.
SWARM_PORTS: tuple[tuple[int, L4, str, bool], ...] = (
    (2377, "tcp", "cluster management: joining, and the managers' Raft", True),
    (7946, "tcp", "node discovery and the networks' gossip", False),
    (7946, "udp", "node discovery and the networks' gossip", False),
    (4789, "udp", "overlay network traffic (VXLAN), the routing mesh's included", False),
)


def _ufw_lets_in(ruleset: Ruleset, peer: str, port: int, proto: L4) -> bool | None:
    """True: ufw accepts a new connection from `peer` to this host's port; False: it refuses it;
    None: it depends on what ufw's rules ask beyond source and port (an interface, say)."""
    conn = Connection(source=ipaddress.ip_address(peer), port=port, proto=proto)
    decided = decide(ruleset, conn, None)
    if decided.action in ("allow", "limit"):
        return True
    return None if any(u.action in ("allow", "limit") for u in decided.unless) else False


def check_swarm_ports(swarm: SwarmFacts) -> list[Finding]:
    """The host firewall (ufw) refuses a port Swarm needs from another node of the swarm: the
    cluster breaks (a node can't join, overlay networks and the routing mesh stop carrying
    traffic) with nothing in Docker's own output to say why."""
    if swarm.ufw is None:
        return []
    ruleset = build_ruleset(swarm.ufw, DockerState()).ruleset
    findings = []
    for port, proto, what, managers_only in SWARM_PORTS:
        if managers_only and not swarm.manager:
            continue
        if not swarm.peers:
            decisions = decisions_for(swarm.ufw, ruleset,
                                      PublishedPort("0.0.0.0", port, proto, "", port))
            if any(d.action in ("allow", "limit") for d in decisions):
                continue
            findings.append(Finding(
                "swarm-ports", "warning", f"host firewall: {port}/{proto}",
                f"ufw lets nobody reach {port}/{proto} ({what}): no other node can join or "
                "talk to this one",
                f"`ufw allow from NODE to any port {port} proto {proto}` for each node that "
                "joins the swarm (or from the network the nodes share)",
                {"host_port": port, "proto": proto, "peers": []}))
            continue
        verdicts = {peer: _ufw_lets_in(ruleset, peer, port, proto) for peer in swarm.peers}
        refused = [p for p, ok in verdicts.items() if ok is False]
        unsure = [p for p, ok in verdicts.items() if ok is None]
        cases: tuple[tuple[list[str], Severity, str], ...] = (
            (refused, "serious", "refuses"),
            (unsure, "warning", "may refuse (depending on the interface it arrives on)"))
        for peers, severity, how in cases:
            if not peers:
                continue
            findings.append(Finding(
                "swarm-ports", severity, f"host firewall: {port}/{proto}",
                f"ufw {how} {port}/{proto} ({what}) from {', '.join(peers)}, another node of "
                "this swarm: Swarm between them breaks, and Docker does not say why",
                f"on this node: `ufw allow from ADDRESS to any port {port} proto {proto}` for "
                f"{', '.join(peers)} (or for the network the nodes share)",
                {"host_port": port, "proto": proto, "peers": list(peers)}))
    return findings


# --------------------------------------------------------------------------- all of them

def check_enforcement(enforcement: Enforcement | None,
                      containers: Iterable[ContainerFacts] = (),
                      mesh: Iterable[PublishedPort] = ()) -> list[Finding]:
    """fwsync's rules are not in the kernel, or new connections can get past them."""
    if enforcement is None or enforcement.enforcing:
        return []
    if not enforcement.held:
        # Nothing of fwsync's is enforced: what Docker publishes is open to whoever can route
        # to the host, whatever the rules say. Serious when something is published beyond
        # loopback; with nothing published there is nothing to let past yet.
        exposed = [p for p in _published(containers, mesh) if not _is_loopback(p.host_ip)]
        return [Finding(
            "not-enforcing", "serious" if exposed else "info", "fwsync (not applied)",
            "fwsync is not enforcing: it holds nothing in the kernel"
            + (f", and {len(exposed)} published port binding(s) are open to anyone who can "
               "route to this host, whatever the rules say" if exposed else ""),
            "run `fwsync apply` (or start `fwsync daemon`)",
            {"problems": list(enforcement.problems)})]
    if enforcement.audited and replace(enforcement, audited=()).enforcing:
        return [Finding(
            "audit-mode", "warning", f"fwsync ({enforcement.backend})",
            f"fwsync is not enforcing: {audit_problem(enforcement.audited)}",
            "when `fwsync log --would-deny` shows nothing it should not, take `audit` (or "
            "`mode audit`) out of the rules and `fwsync apply`",
            {"problems": list(enforcement.problems)})]
    return [Finding(
        "not-enforcing", "serious", f"fwsync ({enforcement.backend})",
        "fwsync's rules are in the kernel, but new connections to published ports can be "
        f"accepted before they reach them: {'; '.join(enforcement.problems)}",
        "run `fwsync apply` (it puts fwsync's jump first again), or run `fwsync daemon`, which "
        "repairs this within a second; find what moved it (a `ufw reload`, a dockerd restart, "
        "a hand edit)",
        {"problems": list(enforcement.problems)})]


def check_later_proxy_publishes(containers: Iterable[ContainerFacts],
                                enforcement: Enforcement | None = None) -> list[Finding]:
    """docker-proxy serves IPv6 here, and the kernel holds no catch-all for its sockets (the
    nftables backend's `socket cgroupv2` on dockerd's cgroup, Enforcement.proxy_catchall):
    fwsync judges that INPUT path only for the bindings it knew at apply (core/build.py,
    proxy_window). A port published later is open over IPv6 until the next apply."""
    proxied = [p for p in _published(containers)
               if p.family == 6 and p.container_ipv6 is False and not p.routed]
    if not proxied or (enforcement is not None and enforcement.proxy_catchall):
        return []
    shown = ", ".join(dict.fromkeys(binding(p) for p in proxied))
    return [Finding(
        "ipv6-proxy-later", "warning", "host",
        f"docker-proxy serves IPv6 connections here ({shown}); fwsync judges them only on the "
        "ports Docker had published at the last apply: a port published after it is open over "
        "IPv6 to whatever the host's INPUT firewall admits (e.g. `ufw allow PORT`) until the "
        "next apply",
        "use the nftables backend with dockerd in a cgroup of its own (systemd's "
        "docker.service): it judges every port docker-proxy serves; or run `fwsync daemon` (it "
        "judges a new port at Docker's start event, within a fraction of a second), or give "
        "the containers IPv6 addresses with Docker's ip6tables on (then "
        "IPv6 is DNATed and every new port is judged), or turn the userland proxy off",
        {"bindings": [binding(p) for p in proxied]})]


def check_bridges(networks: Iterable[DockerNetwork], links: tuple[LinkFacts, ...] | None
                  ) -> list[Finding]:
    """Docker networks whose bridge the host does not show as one Docker made for them (an
    uplink adopted with `-o com.docker.network.bridge.name=...`): fwsync judges their traffic
    like outside traffic, which is safe, but their containers' own connections to published
    ports are judged too, and the host's uplink is in a Docker network."""
    _trusted, refused = judge_bridges(networks, links)
    return [Finding(
        "untrusted-bridge", "serious", f"bridge {shown(r.name)} (Docker network "
        f"{shown(r.network)})",
        f"not trusted: {r.why}. Whoever may create Docker networks can name a network's bridge "
        "after any interface; fwsync judges what arrives on this one like outside traffic",
        "if this is the host's own interface, remove the Docker network that adopted it "
        f"(`docker network rm {shown(r.network)}`) and give Docker networks bridges of their own",
        {"bridge": shown(r.name), "network": shown(r.network), "why": r.why})
        for r in refused]


def check_direct_routing_gap(enforcement: Enforcement | None) -> list[Finding]:
    """What the iptables backend cannot close without a name (core/networks.IPTABLES_GAP)."""
    if enforcement is None or enforcement.backend != "iptables":
        return []
    return [Finding(
        "direct-routing-gap", "warning", "fwsync (iptables)", IPTABLES_GAP[0].upper()
        + IPTABLES_GAP[1:],
        "run `fwsync daemon` (it reconciles at every network creation), or use the nftables "
        "backend (`--backend nftables`), which judges every bridge by its kind",
        {"backend": "iptables"})]


CHECKS: dict[str, str] = {
    "not-enforcing": "fwsync's rules not in the kernel, or not reached first",
    "ipv6-proxy-later": "IPv6 through docker-proxy: ports published after apply are open",
    "untrusted-bridge": "Docker networks whose bridge is not one Docker made (an adopted uplink)",
    "direct-routing-gap": "what the iptables backend cannot close without a name",
    "ungoverned-port": "published ports that no fwsync rule names",
    "internal-port-exposed": "databases and caches published on all addresses",
    "no-memory-limit": "containers without a memory limit",
    "no-restart-policy": "containers without a restart policy",
    "no-swap": "a host without swap",
    "docker-proxy-cpu": "docker-proxy processes busy copying traffic",
    "dangling-images": "untagged images and the disk they hold",
    "env-container-ip": "containers configured with another container's address",
    "nftables-forward-drop": "Docker's nftables rules behind a forward chain that drops",
    "swarm-ports": "ports Swarm needs between nodes, refused by the host firewall",
}


def diagnose(facts: HostFacts, rules: Rules, ignore: Collection[str] = (),
             proxy_threshold: float = PROXY_CPU_SHARE) -> Report:
    """Every check that is not ignored and whose facts could be gathered."""
    running: dict[str, Callable[[], list[Finding]]] = {
        "not-enforcing": lambda: check_enforcement(facts.enforcement, facts.containers, mesh),
        "ipv6-proxy-later": lambda: check_later_proxy_publishes(facts.containers,
                                                                facts.enforcement),
        "untrusted-bridge": lambda: check_bridges(facts.networks, facts.links),
        "direct-routing-gap": lambda: check_direct_routing_gap(facts.enforcement),
        "ungoverned-port": lambda: check_ungoverned_ports(facts.containers, rules, mesh),
        "internal-port-exposed": lambda: check_internal_ports(facts.containers, rules, mesh),
        "no-memory-limit": lambda: check_memory_limits(facts.containers),
        "no-restart-policy": lambda: check_restart_policies(facts.containers),
        "dangling-images": lambda: check_dangling_images(facts.images),
        "env-container-ip": lambda: check_env_container_ips(facts.containers),
    }
    skipped = dict(facts.unavailable)
    swarm = facts.swarm
    mesh = swarm.mesh if swarm is not None else ()
    if swarm is None:
        running["swarm-ports"] = lambda: []  # no swarm: nothing it needs can be refused
    elif swarm.ufw is None and swarm.ufw_note:
        skipped.setdefault("swarm-ports", swarm.ufw_note)
    else:
        running["swarm-ports"] = lambda: check_swarm_ports(swarm)
    swap, proxies = facts.swap_total_kb, facts.proxies
    if swap is not None:
        running["no-swap"] = lambda: check_swap(swap)
    else:
        skipped.setdefault("no-swap", "swap size unknown")
    if proxies is not None:
        running["docker-proxy-cpu"] = lambda: check_proxy_cpu(proxies, facts.containers,
                                                              proxy_threshold)
    else:
        skipped.setdefault("docker-proxy-cpu", "docker-proxy processes not sampled")
    forward = facts.forward
    if forward is not None:
        running["nftables-forward-drop"] = lambda: check_nftables_forward_drop(forward)
    else:
        skipped.setdefault("nftables-forward-drop", "the kernel's firewall was not read")
    skipped = {k: v for k, v in skipped.items() if k not in ignore}
    ran = [name for name in CHECKS if name in running and name not in ignore
           and name not in skipped]
    findings = [f for name in ran for f in running[name]()]
    order = {"serious": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.severity], list(CHECKS).index(f.check)))
    return Report(findings=tuple(findings), checks=tuple(ran), skipped=skipped)
