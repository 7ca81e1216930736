"""Every doctor check, with a finding and without: pure functions over hand-made facts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fwsync.core.enforcing import nothing_held
from fwsync.core.facts import (
    ContainerFacts,
    ForwardFacts,
    HostFacts,
    ImageFacts,
    ProxyFacts,
    SwarmFacts,
)
from fwsync.core.observed import PublishedPort
from fwsync.doctor.checks import (
    CHECKS,
    Rules,
    addresses_in,
    check_dangling_images,
    check_enforcement,
    check_env_container_ips,
    check_internal_ports,
    check_memory_limits,
    check_nftables_forward_drop,
    check_proxy_cpu,
    check_restart_policies,
    check_swap,
    check_swarm_ports,
    check_ungoverned_ports,
    diagnose,
    internal_service,
)
from fwsync.observe.host_facts import ufw_policy
from fwsync.rules.model import Endpoint

from .helpers import policy, ports, rule

pytestmark = pytest.mark.unit

NO_RULES = Rules(policy=None, problem="/etc/fwsync/rules: no such file", path="/etc/fwsync/rules")


def port(host_port: int, container: str = "web", *, host_ip: str = "0.0.0.0",
         container_port: int = 80, image: str = "nginx:1", proto: str = "tcp") -> PublishedPort:
    return PublishedPort(host_ip, host_port, proto, container, container_port,  # type: ignore[arg-type]
                         image=image)


def ctr(name: str, *published: PublishedPort, memory: int = 256 << 20,
        restart: str = "unless-stopped", **kw: object) -> ContainerFacts:
    return ContainerFacts(name=name, memory_limit=memory, restart_policy=restart,
                          ports=published, **kw)  # type: ignore[arg-type]


def allow_port(line: int, number: int) -> Rules:
    return Rules(policy(rule(line, proto="tcp", dst=Endpoint(ports=ports(number)))))


# --------------------------------------------------------------------------- not-enforcing


def test_fwsync_holding_nothing_is_not_enforcing() -> None:
    """With none of fwsync's objects in the kernel, doctor says fwsync is not enforcing:
    serious when Docker publishes beyond loopback, info when nothing is published."""
    held_nothing = HostFacts(containers=(ctr("web", port(8080)),),
                             enforcement=nothing_held("iptables"))
    found = [f for f in diagnose(held_nothing, NO_RULES).findings if f.check == "not-enforcing"]
    assert [(f.severity, f.subject) for f in found] == [("serious", "fwsync (not applied)")]
    assert "fwsync is not enforcing: it holds nothing in the kernel" in found[0].message
    assert [f.severity for f in check_enforcement(
        nothing_held("nftables"), [ctr("db", port(5432, host_ip="127.0.0.1"))])] == ["info"]
    assert check_enforcement(None) == [], "the kernel could not be read: no answer"



def test_a_port_no_rule_names_is_decided_by_the_default_alone() -> None:
    rules = allow_port(2, 443)
    found = check_ungoverned_ports([ctr("web", port(8080))], rules)
    assert [(f.check, f.severity, f.subject) for f in found] == [
        ("ungoverned-port", "info", "0.0.0.0:8080/tcp → web:80")]
    assert "default `deny` refuses everyone" in found[0].message
    assert found[0].details["default"] == "deny"


def test_a_default_allow_makes_an_ungoverned_port_a_warning() -> None:
    rules = Rules(policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(443))), default="allow"))
    [found] = check_ungoverned_ports([ctr("web", port(8080))], rules)
    assert found.severity == "warning" and "lets anyone connect" in found.message


def test_ports_a_rule_or_a_protection_decides_are_governed() -> None:
    rules = allow_port(2, 8080)
    local = port(6379, "cache", host_ip="127.0.0.1")
    assert check_ungoverned_ports([ctr("web", port(8080)), ctr("cache", local)], rules) == []


def test_without_rules_nothing_governs_a_published_port() -> None:
    found = check_ungoverned_ports(
        [ctr("web", port(8080), port(8080, host_ip="::"), port(6379, host_ip="127.0.0.1"))],
        NO_RULES)
    assert [(f.severity, f.subject) for f in found] == [
        ("serious", "0.0.0.0:8080/tcp, [::]:8080/tcp → web:80")], "v4 and v6 are one finding"
    assert "no such file" in found[0].message and "bypasses ufw" in found[0].message
    assert found[0].details["host_ips"] == ["0.0.0.0", "::"]


# --------------------------------------------------------------------------- internal-port-exposed


@pytest.mark.parametrize(("published", "service"), [
    (port(5432, container_port=5432), "PostgreSQL"),
    (port(15432, container_port=5432), "PostgreSQL"),         # by the service's own port
    (port(5432, container_port=80), "PostgreSQL"),            # by the host port
    (port(18080, image="docker.io/library/redis:7"), "Redis"),  # by the image's name
    (port(18081, image="bitnami/postgresql@sha256:ab12"), "PostgreSQL"),
    (port(27017, image="x"), "MongoDB"),
    (port(8080), None),
])
def test_what_looks_internal(published: PublishedPort, service: str | None) -> None:
    assert internal_service(published) == service


def test_an_internal_port_open_to_anyone_is_serious() -> None:
    rules = Rules(policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(5432)))))
    [found] = check_internal_ports([ctr("db", port(5432, "db", container_port=5432))], rules)
    assert (found.check, found.severity) == ("internal-port-exposed", "serious")
    assert "PostgreSQL" in found.message and "anyone may connect" in found.message
    assert "127.0.0.1:5432:5432" in found.fix


def test_an_internal_port_the_rules_restrict_is_still_a_warning() -> None:
    from .helpers import aset
    rules = Rules(policy(rule(2, proto="tcp", src=Endpoint(set="office"),
                              dst=Endpoint(ports=ports(5432))),
                         sets=(aset("office", "198.51.100.0/25"),)))
    [found] = check_internal_ports([ctr("db", port(5432, "db"))], rules)
    assert found.severity == "warning" and "restrict" in found.message


def test_without_rules_an_internal_port_is_serious() -> None:
    [found] = check_internal_ports([ctr("db", port(6379, "cache"))], NO_RULES)
    assert found.severity == "serious"


def test_internal_ports_on_loopback_or_one_address_are_fine() -> None:
    containers = [ctr("db", port(5432, "db", host_ip="127.0.0.1"),
                      port(3306, "db", host_ip="198.51.100.5"), port(8080, "db"))]
    assert check_internal_ports(containers, NO_RULES) == []


# --------------------------------------------------------------------------- limits and restarts


def test_a_container_without_memory_limit_is_found() -> None:
    found = check_memory_limits([ctr("a", memory=0), ctr("b")])
    assert [(f.check, f.severity, f.subject) for f in found] == [
        ("no-memory-limit", "warning", "a")]
    assert "OOM" in found[0].message and "--memory" in found[0].fix


def test_containers_with_memory_limits_pass() -> None:
    assert check_memory_limits([ctr("a"), ctr("b", memory=1)]) == []


@pytest.mark.parametrize("policy_name", ["", "no"])
def test_a_container_without_restart_policy_is_found(policy_name: str) -> None:
    [found] = check_restart_policies([ctr("a", restart=policy_name), ctr("b")])
    assert (found.check, found.subject) == ("no-restart-policy", "a")
    assert "--restart unless-stopped a" in found.fix


@pytest.mark.parametrize("policy_name", ["always", "unless-stopped", "on-failure"])
def test_restart_policies_pass(policy_name: str) -> None:
    assert check_restart_policies([ctr("a", restart=policy_name)]) == []


def test_an_auto_removed_container_needs_no_restart_policy() -> None:
    assert check_restart_policies([ctr("job", restart="no", auto_remove=True)]) == []


# --------------------------------------------------------------------------- swap


def test_no_swap_is_found() -> None:
    [found] = check_swap(0)
    assert (found.check, found.severity, found.subject) == ("no-swap", "warning", "host")
    assert "swapon" in found.fix


def test_some_swap_passes() -> None:
    assert check_swap(2 * 1024 * 1024) == []


# --------------------------------------------------------------------------- docker-proxy CPU


def proxy(pid: int, cpu: float, host_port: int = 15000, host_ip: str = "127.0.0.1"
          ) -> ProxyFacts:
    return ProxyFacts(pid=pid, proto="tcp", host_ip=host_ip, host_port=host_port,
                      container_ip="198.51.100.130", container_port=80, cpu_seconds=cpu,
                      interval=1.0)


def test_a_busy_docker_proxy_names_the_port_it_serves() -> None:
    sink = ctr("sink", port(15000, "sink", host_ip="127.0.0.1"))
    found = check_proxy_cpu([proxy(41, 0.45), proxy(42, 0.01, 15001)], [sink])
    assert [f.subject for f in found] == ["docker-proxy pid 41 for 127.0.0.1:15000/tcp → sink:80"]
    assert found[0].details["cpu_percent"] == 45.0
    assert found[0].details["container"] == "sink"
    assert "userland-proxy" in found[0].fix


def test_idle_docker_proxies_pass() -> None:
    assert check_proxy_cpu([proxy(41, 0.0), proxy(42, 0.09)], []) == []


def test_a_busy_proxy_of_an_unknown_container_shows_its_address() -> None:
    [found] = check_proxy_cpu([proxy(7, 0.5, host_ip="::")], [])
    assert found.subject == "docker-proxy pid 7 for [::]:15000/tcp → 198.51.100.130:80"


# --------------------------------------------------------------------------- dangling images


def test_untagged_images_are_counted_with_the_space_they_alone_hold() -> None:
    images = [ImageFacts("sha256:" + "a" * 64, (), size=300_000_000, shared_size=100_000_000,
                         containers=0),
              ImageFacts("sha256:" + "b" * 64, (), size=50_000_000, shared_size=0, containers=1),
              ImageFacts("sha256:" + "c" * 64, ("app:1",), size=900_000_000)]
    [found] = check_dangling_images(images)
    assert (found.check, found.severity) == ("dangling-images", "info")
    assert found.details == {"count": 2, "bytes": 250_000_000, "in_use": 1}
    assert "250.0 MB" in found.message and "aaaaaaaaaaaa" in found.message
    assert "1 still used by a container" in found.message


def test_dangling_images_over_a_gigabyte_are_a_warning() -> None:
    [found] = check_dangling_images([ImageFacts("sha256:d", (), size=2 << 30)])
    assert found.severity == "warning" and "image prune" in found.fix


def test_tagged_images_pass() -> None:
    assert check_dangling_images([ImageFacts("sha256:c", ("app:1", "app:latest"), size=1)]) == []


# --------------------------------------------------------------------------- env-container-ip


def test_addresses_are_found_in_urls_and_lists() -> None:
    assert addresses_in("postgres://u:p@172.17.0.3:5432/db") == ["172.17.0.3"]
    assert addresses_in("a=10.0.0.1,b=[2001:db8::2]:80") == ["10.0.0.1", "2001:db8::2"]
    assert addresses_in("version 1.2.3.4.5, 999.1.1.1, no address") == []


def test_an_environment_holding_another_containers_address_is_found() -> None:
    db = ctr("db", addresses=("198.51.100.131", "2001:db8:d0c::3"))
    app = ctr("app", addresses=("198.51.100.132",),
              env=(("DB_URL", "postgres://198.51.100.131:5432/x"), ("OWN", "198.51.100.132"),
                   ("V6", "2001:db8:d0c:0:0:0:0:3")),
              extra_hosts=("db:198.51.100.131",))
    found = check_env_container_ips([db, app])
    assert [(f.subject, f.details["address"], f.details["owner"]) for f in found] == [
        ("app: DB_URL", "198.51.100.131", "db"),
        ("app: V6", "2001:db8:d0c::3", "db"),
        ("app: --add-host db", "198.51.100.131", "db")]
    assert all(f.check == "env-container-ip" and "user-defined network" in f.fix for f in found)


def test_names_and_unrelated_addresses_pass() -> None:
    db = ctr("db", addresses=("198.51.100.131",))
    app = ctr("app", env=(("DB_HOST", "db"), ("DNS", "198.51.100.53")))
    assert check_env_container_ips([db, app]) == []


# --------------------------------------------------------------------------- together


def test_a_well_configured_host_is_clean() -> None:
    facts = HostFacts(containers=(ctr("web", port(8080)),),
                      images=(ImageFacts("sha256:c", ("nginx:1",), size=1),),
                      swap_total_kb=1024, proxies=(proxy(5, 0.0, 8080, "0.0.0.0"),),
                      forward=ForwardFacts(docker_nftables=("ip", "ip6")))
    report = diagnose(facts, allow_port(2, 8080))
    assert report.findings == () and report.worst is None and not report.at_least("info")
    assert report.checks == tuple(CHECKS) and report.skipped == {}


def test_findings_come_most_severe_first_and_ignore_leaves_checks_out() -> None:
    facts = HostFacts(containers=(ctr("db", port(5432, "db"), memory=0),), swap_total_kb=0,
                      proxies=())
    report = diagnose(facts, NO_RULES)
    assert [f.severity for f in report.findings] == ["serious", "serious", "warning", "warning"]
    assert report.worst == "serious" and report.at_least("serious")
    quiet = diagnose(facts, NO_RULES, ignore={"ungoverned-port", "internal-port-exposed",
                                              "no-swap"})
    assert [f.check for f in quiet.findings] == ["no-memory-limit"]
    assert quiet.worst == "warning" and not quiet.at_least("serious")
    assert "no-swap" not in quiet.checks


def test_checks_whose_facts_are_missing_are_skipped_with_the_reason() -> None:
    facts = HostFacts(swap_total_kb=None, proxies=None,
                      unavailable={"no-swap": "cannot read /proc/meminfo"})
    report = diagnose(facts, NO_RULES)
    assert report.skipped == {"no-swap": "cannot read /proc/meminfo",
                              "docker-proxy-cpu": "docker-proxy processes not sampled",
                              "nftables-forward-drop": "the kernel's firewall was not read"}
    assert "no-swap" not in report.checks and "docker-proxy-cpu" not in report.checks
    assert diagnose(facts, NO_RULES, ignore={"no-swap"}).skipped.keys() == {
        "docker-proxy-cpu", "nftables-forward-drop"}


@pytest.mark.parametrize(("docker", "dropping", "found"), [
    # ufw's FORWARD DROP (iptables-nft) under Docker 29's nftables tables: IPv4 broken
    (("ip", "ip6"), ("ip filter FORWARD",), {"ip docker-bridges": ["ip filter FORWARD"]}),
    # an inet table drops both families; legacy iptables' FORWARD too
    (("ip", "ip6"), ("inet filter forward", "ip6 filter FORWARD (iptables-legacy)"),
     {"ip docker-bridges": ["inet filter forward"],
      "ip6 docker-bridges": ["inet filter forward", "ip6 filter FORWARD (iptables-legacy)"]}),
    # Docker writes iptables (no docker-bridges table): its own FORWARD DROP is how it works
    ((), ("ip filter FORWARD",), {}),
    # Docker's nftables and nothing else that drops
    (("ip", "ip6"), (), {}),
])
def test_docker_nftables_behind_a_forward_drop(docker: tuple[str, ...], dropping: tuple[str, ...],
                                               found: dict[str, list[str]]) -> None:
    facts = ForwardFacts(docker_nftables=docker, dropping=dropping)
    findings = check_nftables_forward_drop(facts)
    assert {f.details["table"]: f.details["chains"] for f in findings} == found
    assert all(f.severity == "warning" and "ufw default allow routed" in f.fix
               for f in findings)


# --------------------------------------------------------------------------- swarm-ports

UFW_DIR = Path(__file__).resolve().parent.parent / "golden" / "ufw-import"
SWARM_RULES = """\
### tuple ### allow tcp 2377 0.0.0.0/0 any 198.51.100.0/25 in
### tuple ### allow any 7946 0.0.0.0/0 any 198.51.100.0/25 in
### tuple ### allow udp 4789 0.0.0.0/0 any 198.51.100.0/25_eth1 in
"""


def ufw_dir(tmp_path: Path, tuples: str, enabled: str = "yes") -> Path:
    """A copy of ufw's files from a real ufw (tests/golden/ufw-import), plus `tuples`."""
    d = tmp_path / "ufw"
    shutil.copytree(UFW_DIR, d)
    (d / "user.rules").write_text((d / "user.rules").read_text().replace(
        "### END RULES ###", tuples + "### END RULES ###"))
    (d / "ufw.conf").write_text(f"ENABLED={enabled}\n")
    return d


def test_ufw_s_own_files_become_the_policy_the_swarm_check_judges_by(tmp_path: Path) -> None:
    d = ufw_dir(tmp_path, "")
    pol, note = ufw_policy(d, d / "default-ufw")
    assert pol is not None and note == "" and pol.default == "deny"
    assert ufw_policy(ufw_dir(tmp_path / "off", "", "no"), d / "default-ufw") == (None, "")
    missing, why = ufw_policy(tmp_path / "none", d / "default-ufw")
    assert missing is None and "not checked" in why


def test_a_ufw_that_refuses_another_node_breaks_the_swarm(tmp_path: Path) -> None:
    d = ufw_dir(tmp_path, SWARM_RULES.replace("_eth1", ""))
    pol, _ = ufw_policy(d, d / "default-ufw")
    assert pol is not None
    inside, outside = "198.51.100.3", "203.0.113.9"  # ufw denies 203.0.113.0/24 outright
    assert check_swarm_ports(SwarmFacts(manager=True, peers=(inside,), ufw=pol)) == []
    found = check_swarm_ports(SwarmFacts(manager=True, peers=(inside, outside), ufw=pol))
    assert [(f.severity, f.subject, f.details["peers"]) for f in found] == [
        ("serious", f"host firewall: {p}", [outside])
        for p in ("2377/tcp", "7946/tcp", "7946/udp", "4789/udp")]
    assert "ufw allow from ADDRESS to any port 7946 proto udp" in found[2].fix
    # A worker needs no 2377: only managers serve it.
    worker = check_swarm_ports(SwarmFacts(manager=False, peers=(outside,), ufw=pol))
    assert [f.subject for f in worker] == [f"host firewall: {p}"
                                           for p in ("7946/tcp", "7946/udp", "4789/udp")]


def test_a_rule_that_needs_an_interface_may_or_may_not_let_a_node_in(tmp_path: Path) -> None:
    d = ufw_dir(tmp_path, SWARM_RULES)
    pol, _ = ufw_policy(d, d / "default-ufw")
    assert pol is not None
    found = check_swarm_ports(SwarmFacts(manager=True, peers=("198.51.100.3",), ufw=pol))
    assert [(f.severity, f.subject) for f in found] == [("warning", "host firewall: 4789/udp")]
    assert "depending on the interface" in found[0].message


def test_with_no_other_node_known_it_asks_whether_anyone_may_connect(tmp_path: Path) -> None:
    d = ufw_dir(tmp_path, "")
    # ufw as a fresh install leaves it: `ufw allow 22/tcp`, `default deny incoming`.
    (d / "user.rules").write_text("### RULES ###\n"
                                  "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n"
                                  "### END RULES ###\n")
    pol, _ = ufw_policy(d, d / "default-ufw")
    assert pol is not None
    found = check_swarm_ports(SwarmFacts(manager=True, ufw=pol))
    assert {(f.severity, f.subject) for f in found} == {
        ("warning", f"host firewall: {p}") for p in ("2377/tcp", "7946/tcp", "7946/udp",
                                                     "4789/udp")}
    assert diagnose(HostFacts(swarm=SwarmFacts(manager=True, ufw_note="no ufw")),
                    NO_RULES).skipped["swarm-ports"] == "no ufw"
    assert "swarm-ports" in diagnose(HostFacts(), NO_RULES).checks, "no swarm: nothing to refuse"


def test_ipv6_served_by_docker_proxy_is_said_to_leave_later_ports_open() -> None:
    from fwsync.doctor.checks import check_later_proxy_publishes

    proxied = PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=False)
    dnated = PublishedPort("::", 8081, "tcp", "api", 80, container_ipv6=True)
    v4 = PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, container_ipv6=False)
    assert check_later_proxy_publishes([ContainerFacts("api", ports=(dnated,)),
                                        ContainerFacts("web4", ports=(v4,))]) == []
    [found] = check_later_proxy_publishes([ContainerFacts("web", ports=(v4, proxied))])
    assert (found.check, found.severity, found.details) == (
        "ipv6-proxy-later", "warning", {"bindings": ["[::]:8080/tcp"]})
    # The kernel holds the nftables backend's catch-all (read back): nothing is left open.
    from fwsync.core.enforcing import Enforcement

    held = Enforcement("nftables", (), proxy_catchall=True)
    assert check_later_proxy_publishes([ContainerFacts("web", ports=(v4, proxied))], held) == []
    [found] = check_later_proxy_publishes([ContainerFacts("web", ports=(v4, proxied))],
                                          Enforcement("iptables", ()))
    assert "use the nftables backend" in found.fix
