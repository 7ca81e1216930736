"""The KernelLab reproduces a Docker host's packet path (20.10's and 28's chain layouts), without
fwsync: if these fail, every kernel test built on it means nothing."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docker_layouts import Bridge, Published, nftables_tables
from tests.lab import (
    ATTACKER_V4,
    ATTACKER_V6,
    CTR_V4,
    CTR_V6,
    KernelLab,
    Netns,
    Peer,
    Proto,
    Target,
    kernel_tools,
    netns_names,
    pid_running,
    probe_many,
    require,
    ruleset_snapshot,
    run_fwsync,
    unique_name,
)

pytestmark = pytest.mark.kernel


def reach(peer: Peer, port: int) -> dict[str, str]:
    """One batch: the port on HOST from `peer`, v4/v6 x tcp/udp."""
    keys: list[tuple[bool, Proto]] = [(v6, proto) for v6 in (False, True)
                                      for proto in ("tcp", "udp")]
    states = probe_many(peer, [(peer.host_addr(v6), port, proto) for v6, proto in keys])
    return {f"{proto}/v{6 if v6 else 4}": s for (v6, proto), s in zip(keys, states, strict=True)}


ALL_OPEN = {"tcp/v4": "open", "udp/v4": "open", "tcp/v6": "open", "udp/v6": "open"}


def root_ruleset() -> str:
    # Read-only look at the machine's own firewall: the test bed must never change it.
    return subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


def test_published_port_open_from_both_clients_unpublished_filtered(kernel_lab: KernelLab) -> None:
    kernel_lab.publish(5432, 80, "tcp")
    kernel_lab.publish(5432, 80, "udp")
    for peer in kernel_lab.peers:
        assert reach(peer, 5432) == ALL_OPEN, peer.name
    # The server listens on 81 too, but nothing publishes it: Docker's FORWARD policy drops it.
    # Port 80, published, is reachable directly at the container's address up to Docker 27
    # (the direct-routing exposure, reproduced on purpose); 28 drops that in raw PREROUTING.
    direct: list[Target] = [(CTR_V4, 81, "tcp"), (CTR_V6, 81, "tcp"), (CTR_V4, 81, "udp"),
                            (CTR_V6, 81, "udp"), (CTR_V4, 80, "tcp"), (CTR_V6, 80, "udp")]
    published = "filtered" if kernel_lab.docker_drops_direct_routing else "open"
    for peer in kernel_lab.peers:
        assert probe_many(peer, direct) == ["filtered"] * 4 + [published] * 2, peer.name
    # A host port nobody publishes reaches HOST itself, which has no firewall: refused.
    assert reach(kernel_lab.attacker, 5433) == dict.fromkeys(ALL_OPEN, "closed")


def test_docker_user_drop_filters_that_client_only(kernel_lab: KernelLab) -> None:
    kernel_lab.publish(5432, 80, "tcp")
    kernel_lab.publish(5432, 80, "udp")
    kernel_lab.iptables("-I", "DOCKER-USER", "-s", ATTACKER_V4, "-j", "DROP")
    assert reach(kernel_lab.attacker, 5432) == {
        "tcp/v4": "filtered", "udp/v4": "filtered", "tcp/v6": "open", "udp/v6": "open"}
    assert reach(kernel_lab.trusted, 5432) == ALL_OPEN
    kernel_lab.iptables("-I", "DOCKER-USER", "-s", ATTACKER_V6, "-j", "DROP", v6=True)
    assert reach(kernel_lab.attacker, 5432) == dict.fromkeys(ALL_OPEN, "filtered")
    assert reach(kernel_lab.trusted, 5432) == ALL_OPEN


def _chain(save: str, chain: str, table: str = "filter") -> list[str]:
    """The rules of one chain in an iptables-save dump, in order."""
    text = save.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0] if f"*{table}\n" in save else ""
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


def test_rules_are_the_generation_s(kernel_lab: KernelLab) -> None:
    """The layout's landmarks (tests/e2e/test_testbed.py compares whole rulesets with each real
    engine's)."""
    kernel_lab.publish(5432, 80)
    v4, v6 = kernel_lab.save(), kernel_lab.save(v6=True)
    for line in ("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                 "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 5432 -j DNAT "
                 "--to-destination 198.51.100.130:80",
                 ":FORWARD DROP [0:0]",
                 "-A DOCKER -d 198.51.100.130/32 ! -i docker0 -o docker0 -p tcp -m tcp "
                 "--dport 80 -j ACCEPT"):
        assert line in v4
    assert "--to-destination [2001:db8:d0c::2]:80" in v6
    for save in (v4, v6):  # IPv6 has DOCKER-USER from 23.0 on (this lab's default)
        assert _chain(save, "FORWARD")[0] == "-A FORWARD -j DOCKER-USER"
    if kernel_lab.docker == "28":
        for save in (v4, v6):
            assert _chain(save, "FORWARD") == ["-A FORWARD -j DOCKER-USER",
                                               "-A FORWARD -j DOCKER-FORWARD"]
            assert _chain(save, "DOCKER-USER") == []  # created without its RETURN (28.2.2+)
            assert _chain(save, "DOCKER")[-1] == "-A DOCKER ! -i docker0 -o docker0 -j DROP"
        assert _chain(v4, "PREROUTING", "raw") == [
            "-A PREROUTING -d 198.51.100.130/32 ! -i docker0 -j DROP"]
        assert _chain(v6, "PREROUTING", "raw") == [
            "-A PREROUTING -d 2001:db8:d0c::2/128 ! -i docker0 -j DROP"]
    else:
        assert _chain(v4, "DOCKER-USER") == ["-A DOCKER-USER -j RETURN"]
        assert "DOCKER-FORWARD" not in v4 and "*raw" not in v4
    # The variant really is the one asked for: the other one holds no Docker chains.
    other = "legacy" if kernel_lab.variant == "nft" else "nft"
    for cmd in (f"iptables-{other}-save", f"ip6tables-{other}-save"):
        assert "DOCKER" not in kernel_lab.host.run([cmd]).stdout


GOLDEN_29 = Path(__file__).resolve().parent.parent / "golden" / "docker29"


def _listing(text: str) -> str:
    """An `nft list` listing without what differs between nft versions and runs: comments
    (the golden files' provenance), counters, how a long map is wrapped, and the name of the
    output hook's dstnat priority (nft 1.0.6, Debian 12's, prints it as -100)."""
    text = re.sub(r"^#.*\n", "", text, flags=re.M)
    text = re.sub(r" packets \d+ bytes \d+", "", text)
    text = re.sub(r"elements = \{[^}]*\}", lambda m: " ".join(m.group(0).split()), text)
    return text.replace("hook output priority dstnat", "hook output priority -100").strip()


@pytest.mark.parametrize(("golden", "v6", "bridges"), [
    ("ip-usernet-portmap.nft", False,
     [Bridge("docker0", "172.17.0.0/16"),
      Bridge("bridge1", "192.0.2.0/24", (Published("192.0.2.2", 8080, 80),))]),
    ("ip6-icc-off.nft", True,
     [Bridge("br-dummy", "fd49:efd7:54aa::/64", (Published("fd49:efd7:54aa::1", 8080, 80),),
             icc=False, masquerade=False)]),
], ids=["ip", "ip6"])
def test_docker29_tables_are_what_moby_prints(golden: str, v6: bool,
                                              bridges: list[Bridge]) -> None:
    """The hand-written Docker 29 tables (KernelLab's "29-nftables"), loaded into a kernel and
    listed back, are moby's own dumps of the same networks, rule for rule."""
    require(*kernel_tools("nft"))
    with Netns.create(unique_name("nft29")) as ns:
        ns.run(["nft", "-f", "-"], input=nftables_tables(bridges, v6=v6))
        got = ns.run(["nft", "list", "table", "ip6" if v6 else "ip", "docker-bridges"]).stdout
    assert _listing(got) == _listing((GOLDEN_29 / golden).read_text())


def test_ipv6_without_docker_user_like_2010(make_kernel_lab: Callable[..., KernelLab]) -> None:
    lab = make_kernel_lab("nft", v6_docker_user=False)
    lab.publish(5432, 80, "tcp")
    assert "DOCKER-USER" not in lab.save(v6=True)
    assert "-A FORWARD -j DOCKER-USER" in lab.save()
    # Nothing to hook into over IPv6: the port stays open even if v4 DOCKER-USER drops all.
    lab.iptables("-I", "DOCKER-USER", "-j", "DROP")
    assert probe_many(lab.attacker, [(lab.attacker.host_v4, 5432), (lab.attacker.host_v6, 5432)]
                      ) == ["filtered", "open"]


def test_publish_later_and_host_ip(make_kernel_lab: Callable[..., KernelLab]) -> None:
    lab = make_kernel_lab("legacy", bridge="br-fwstest")
    t, a = lab.trusted, lab.attacker
    assert probe_many(t, [(t.host_v4, 6000)]) == ["closed"]
    lab.publish(6000, 80)
    lab.publish(7000, 80, host_ip=t.host_v4)  # like -p 198.51.100.1:7000:80
    assert "! -i br-fwstest" in lab.save()
    assert probe_many(t, [(t.host_v4, 6000), (t.host_v6, 6000), (t.host_v4, 7000),
                          (t.host_v6, 7000)]) == ["open", "open", "open", "closed"]
    # Bound to the trusted-side address only: the attacker's side of HOST does not DNAT it.
    assert probe_many(a, [(a.host_v4, 7000), (a.host_v4, 6000)]) == ["closed", "open"]


def test_snapshot_ignores_counters_and_sees_changes(kernel_lab: KernelLab) -> None:
    kernel_lab.publish(5432, 80)
    before = ruleset_snapshot(kernel_lab, kernel_lab.variant)
    assert "# Generated" not in before and "DNAT" in before
    reach(kernel_lab.attacker, 5432)  # bump counters
    assert ruleset_snapshot(kernel_lab, kernel_lab.variant) == before
    kernel_lab.iptables("-I", "DOCKER-USER", "-s", ATTACKER_V4, "-j", "DROP")
    after = ruleset_snapshot(kernel_lab, kernel_lab.variant)
    assert after != before and f"-A DOCKER-USER -s {ATTACKER_V4}/32 -j DROP" in after
    expect = "ip=filter,nat ip6=filter,nat" if kernel_lab.variant == "legacy" else "ip=- ip6=-"
    assert f"### legacy tables: {expect}\n" in ruleset_snapshot(kernel_lab, "nft")


def test_cleanup_leaves_nothing() -> None:
    require(*kernel_tools("nft"), *kernel_tools("legacy"))
    root_before = root_ruleset()
    for variant in ("nft", "legacy"):
        lab = KernelLab(variant).start()
        server = lab._server
        assert server is not None
        names = [ns.name for ns in lab.namespaces]
        assert set(names) <= set(netns_names())
        lab.cleanup()
        assert lab.leftovers() == []
        assert not set(names) & set(netns_names())
        assert server.poll() is not None and not pid_running(server.pid)
        assert not lab.dir.exists()
        assert not any(Path("/etc/netns", n).exists() for n in names)
    assert root_ruleset() == root_before


def test_run_fwsync_runs_in_host_with_lab_env(kernel_lab: KernelLab, tmp_path: Path) -> None:
    # A stub `fwsync` package first on the path (PYTHONSAFEPATH: not the cwd's real one) reports
    # where and with what it ran: the helper is tested, not the CLI someone else is writing.
    (tmp_path / "fwsync").mkdir()
    (tmp_path / "fwsync" / "__main__.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'netns': os.stat('/proc/self/ns/net').st_ino, 'argv': sys.argv[1:],"
        " 'env': {k: os.environ.get(k) for k in"
        " ('DOCKER_HOST', 'FWSYNC_RULES', 'FWSYNC_LOCK_FILE', 'FWSYNC_DAEMON_STATE',"
        " 'FWSYNC_DOCKER_STATE', 'FWSYNC_RULE_ACTIVITY', 'FWSYNC_DECISIONS', 'FWSYNC_PENDING',"
        " 'EXTRA')}}))\n")
    res = run_fwsync(kernel_lab, "apply", "--dry-run", rules=tmp_path / "rules", check=True,
                     env={"PYTHONSAFEPATH": "1", "PYTHONPATH": str(tmp_path), "EXTRA": "x"})
    seen = json.loads(res.stdout)
    assert seen == {
        "netns": kernel_lab.host.path.stat().st_ino,
        "argv": ["apply", "--dry-run"],
        "env": {"DOCKER_HOST": kernel_lab.docker_host, "FWSYNC_RULES": str(tmp_path / "rules"),
                "FWSYNC_LOCK_FILE": str(kernel_lab.dir / "fwsync.lock"),
                # not the machine's /run/fwsync/daemon.json: status must not see another lab's
                "FWSYNC_DAEMON_STATE": str(kernel_lab.dir / "daemon.json"),
                # nor the machine's memory of Docker (/var/lib/fwsync/docker.json)
                "FWSYNC_DOCKER_STATE": str(kernel_lab.dir / "docker.json"),
                # nor its samples of rule use (/var/lib/fwsync/rule-activity.json)
                "FWSYNC_RULE_ACTIVITY": str(kernel_lab.dir / "rule-activity.json"),
                # nor its log of decisions (/var/log/fwsync/decisions.jsonl)
                "FWSYNC_DECISIONS": str(kernel_lab.dir / "decisions.jsonl"),
                # nor its pending `apply --confirm-within` (/var/lib/fwsync/pending-apply.json)
                "FWSYNC_PENDING": str(kernel_lab.dir / "pending-apply.json"), "EXTRA": "x"},
    }
    assert not Path(kernel_lab.docker_host.removeprefix("unix://")).exists()


def test_require_fails_in_ci_and_skips_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        require("fws-no-such-tool")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="fws-no-such-tool"):
        require("fws-no-such-tool")
