"""The verifier on the real kernel's listing: policies applied for real in a lab namespace on
both backends, read back with the backend's full read (desired=None), held to the matcher
(`disagreements` == ()), and a sample of the connections sent as real packets, held to the
verifier's verdict. Then fwsync's forward chain is opened by hand (a RETURN / accept first in
it): the verifier must see it, and a real packet from a denied source now gets in.

The lab has no dockerd: fwsync is driven in-process inside HOST's namespace (IN_HOST below)
with the bindings the lab publishes given as Docker's state, so `to container` rules and the
input path are in the ruleset as on a Docker host: the container's addresses (an allow to it
matches them after DNAT), and its network, whose bridge HOST shows as one Docker made (the
links read in HOST): its subnets on it are exempt, and the catch-all judges any other bridge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab import CTR_NET_V4, CTR_NET_V6, CTR_V4, CTR_V6, KernelLab, Peer, State, probe_many

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]

# Run inside HOST: apply (or not), read everything back, and answer for the connections asked.
IN_HOST = """
import json, sys
from fwsync.core.build import build_ruleset
from fwsync.core.observed import DockerNetwork, DockerState, PublishedPort
from fwsync.observe.host_links import with_links
from fwsync.reconcile import apply_planned, plan_policy, select_backend
from fwsync.rules.syntax import parse_sources
from fwsync.verify.agree import disagreements
from fwsync.verify.connection import Connection
from fwsync.verify.kernel import Reading
args = json.loads(sys.argv[1])
parsed = parse_sources([("kernel.rules", args["rules"])], lambda _p: "")
assert parsed.ok and parsed.policy is not None, [str(d) for d in parsed.diagnostics]
ports = tuple(PublishedPort(ip, hp, proto, "web", cp, container_ipv6=True, networks=("lab",),
                            container_addrs=tuple(args["ctr"]))
              for ip, hp, proto, cp in args["ports"])
docker = with_links(DockerState(ports=ports, containers=("web",), networks=(
    DockerNetwork("lab", args["bridge"], subnets=tuple(args["subnets"])),)))
if args["apply"]:
    apply_planned(plan_policy(parsed.policy, docker, args["backend"]))
state = select_backend(args["backend"]).read(None)
ruleset = build_ruleset(parsed.policy, docker).ruleset
found = disagreements(ruleset, ports, args["backend"], state)
reading = Reading(args["backend"], state)
verdicts = [reading.verdict(Connection(**c)) for c in args["connections"]]
print(json.dumps({"found": [d.__dict__ for d in found], "verdicts": verdicts,
                  "keys": sorted(state), "trusted": [b.name for b in ruleset.bridges],
                  "narrowed": sum(r.match.dnat_daddr is not None for r in ruleset.rules)}))
"""

PUBLISHED = [(8080, 80, "tcp"), (5432, 80, "tcp"), (2222, 81, "tcp"), (53, 80, "udp")]
POLICIES = {
    "deny-by-default": """\
default deny
define office 198.51.100.0/25, 2001:db8:1::/64
define blocked 203.0.113.0/28
allow from $office to container web port 8080
reject from $blocked to any port 5432 proto tcp
allow from 203.0.113.0/24 to any port 5432
limit from 2001:db8:2::/64 to any port 2222 proto tcp
allow from 198.51.100.0/24 to any port 2000:3000
allow to any port 53 proto udp
""",
    "allow-by-default": """\
default allow
define office 198.51.100.0/25, 2001:db8:1::/64
deny from $office to container web port 8080
reject from 2001:db8:2::/48 to any port 2222 proto tcp
deny from 203.0.113.0/24 to any port 5432
reject from 0.0.0.0/1 to any port 53 proto udp
""",
}
SEEN = {"allow": "open", "limit": "open", "deny": "filtered", "reject": "closed"}


def _ports() -> list[tuple[str, int, str, int]]:
    return [(ip, hp, proto, cp) for hp, cp, proto in PUBLISHED for ip in ("0.0.0.0", "::")]


def _connections(lab: KernelLab) -> list[tuple[Peer, dict[str, Any]]]:
    out = []
    for peer in lab.peers:
        for v6 in (False, True):
            for port, _cp, proto in PUBLISHED:
                out.append((peer, {
                    "family": 6 if v6 else 4, "proto": proto,
                    "saddr": peer.v6 if v6 else peer.v4, "daddr": peer.host_addr(v6),
                    "dport": port, "iif": f"v-{peer.name.rsplit('-', 1)[-1]}",
                    "oif": lab.bridge, "path": "dnat",
                    "dnat_daddr": CTR_V6 if v6 else CTR_V4}))
    return out


def _in_host(lab: KernelLab, backend: str, rules: str, apply: bool,
             connections: list[dict[str, Any]]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "FWSYNC_IPTABLES": lab.variant, "FWSYNC_LOCK_FILE": str(lab.dir / "fwsync.lock"),
           "DOCKER_HOST": lab.docker_host,
           "FWSYNC_DOCKER_STATE": str(lab.dir / "docker.json")}
    args = {"rules": rules, "backend": backend, "apply": apply, "ports": _ports(),
            "connections": connections, "ctr": [CTR_V4, CTR_V6], "bridge": lab.bridge,
            "subnets": [CTR_NET_V4, CTR_NET_V6]}
    res = subprocess.run([*lab.host.nsenter_prefix(), sys.executable, "-c", IN_HOST,
                          json.dumps(args)], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    answer: dict[str, Any] = json.loads(res.stdout)
    return answer


def _packets(lab: KernelLab, conns: list[tuple[Peer, dict[str, Any]]]) -> list[State]:
    seen: list[State] = []
    for peer in lab.peers:
        mine = [c for p, c in conns if p is peer]
        seen += probe_many(peer, [(c["daddr"], c["dport"], c["proto"]) for c in mine])
    return seen


def _lab(make_kernel_lab: Any) -> KernelLab:
    lab: KernelLab = make_kernel_lab("nft")
    for host_port, ctr_port, proto in PUBLISHED:
        lab.publish(host_port, ctr_port, proto)
    return lab


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_verifier_agrees_with_matcher_and_packets(make_kernel_lab: Any, backend: str,
                                                  policy: str) -> None:
    lab = _lab(make_kernel_lab)
    conns = _connections(lab)
    answer = _in_host(lab, backend, POLICIES[policy], True, [c for _p, c in conns])
    # The lab's bridge passed the host check, and the allow / deny to web: only an allow is
    # narrowed to web's addresses after DNAT.
    assert answer["trusted"] == [lab.bridge]
    assert bool(answer["narrowed"]) == (policy == "deny-by-default")
    assert answer["found"] == [], f"verifier vs matcher on the kernel's listing: " \
        f"{answer['found'][:5]}"
    seen = _packets(lab, conns)
    wrong = [(c["saddr"], c["dport"], c["proto"], v, s)
             for (_p, c), v, s in zip(conns, answer["verdicts"], seen, strict=True)
             if SEEN.get(v) != s]
    assert not wrong, f"verifier vs packets (source, port, proto, verdict, seen): {wrong}"
    # The sample is not one-sided: both refusals and admissions were sent.
    assert {"open", "filtered"} <= set(seen)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_an_opening_first_in_fwsyncs_forward_chain_is_seen(make_kernel_lab: Any,
                                                          backend: str) -> None:
    lab = _lab(make_kernel_lab)
    rules = POLICIES["deny-by-default"]
    conns = _connections(lab)
    # The attacker's IPv4 to 8080: not in $office, so denied.
    attacker_8080 = [(p, c) for p, c in conns
                     if p is lab.attacker and c["family"] == 4 and c["dport"] == 8080]
    before = _in_host(lab, backend, rules, True, [c for _p, c in attacker_8080])
    assert before["found"] == [] and before["verdicts"] == ["deny"]
    assert _packets(lab, attacker_8080) == ["filtered"]

    if backend == "iptables":
        for v6 in (False, True):
            lab.iptables("-I", "FWSYNC-FORWARD", "1", "-j", "RETURN", v6=v6)
    else:
        lab.nft("insert rule inet fwsync forward accept\n")
    after = _in_host(lab, backend, rules, False, [c for _p, c in attacker_8080])
    assert after["verdicts"] == ["allow"]
    assert after["found"], "the verifier did not see the opening"
    # Every source the policy keeps out (deny, reject, over a limit) now gets in.
    assert {d["kernel"] for d in after["found"]} == {"allow"}
    assert {d["policy"] for d in after["found"]} == {"deny", "reject", "limit"}
    assert _packets(lab, attacker_8080) == ["open"]
