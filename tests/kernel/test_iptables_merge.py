"""The iptables backend merges a run of neighbouring rules with one verdict that differ only in
their source into one ipset match (as the nftables backend merges them into a set lookup). This
holds it to the rules' own order with real packets: every source gets the verdict that walking
the unmerged rules one by one gives (explain's walk over the built Ruleset), also where verdicts
interleave (allow A, deny B, allow C: B's deny still comes before C's allow)."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import pytest

from fwsync.core.build import build_ruleset
from fwsync.core.explain import decide, parse_connection
from fwsync.core.observed import DockerState
from fwsync.rules.load import load_rules
from tests.lab import HOST_TRUSTED_V4, KernelLab, _run, add_addr, run_fwsync

pytestmark = pytest.mark.kernel
PORT = 5432

# .11-.13 allowed (one run: one set); .12/30 denied (.12-.15: .12 and .13 were allowed before
# it); .14 allowed after the deny (never reached: denied), then .16 and .17 (a second run with
# .14: one set after the deny); .18 rejected; .19 and .20 fall to the default.
RULES = """default deny incoming
allow from 198.51.100.11 to any port 5432
allow from 198.51.100.12 to any port 5432
allow from 198.51.100.13 to any port 5432
deny from 198.51.100.12/30 to any port 5432
allow from 198.51.100.14 to any port 5432
allow from 198.51.100.16 to any port 5432
allow from 198.51.100.17 to any port 5432
reject from 198.51.100.18 to any port 5432 proto tcp
allow from 198.51.100.20 to any port 22
"""
SOURCES = [f"198.51.100.{i}" for i in range(11, 21)]
WANT_STATE = {"allow": "open", "deny": "filtered", "reject": "closed"}

_FROM = r"""
import errno, json, socket, sys
from concurrent.futures import ThreadPoolExecutor
sources, addr, port = json.loads(sys.argv[1])
def one(src):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        s.bind((src, 0))
        try:
            s.connect((addr, port))
            return "open"
        except TimeoutError:
            return "filtered"
        except ConnectionRefusedError:
            return "closed"
with ThreadPoolExecutor(len(sources)) as pool:
    print(json.dumps(list(pool.map(one, sources))))
"""


def probe_from(lab: KernelLab, sources: list[str]) -> dict[str, str]:
    res = _run([*lab.trusted.ns.nsenter_prefix(), sys.executable, "-I", "-c", _FROM,
                json.dumps([sources, HOST_TRUSTED_V4, PORT])], timeout=60)
    return dict(zip(sources, json.loads(res.stdout), strict=True))


def test_merged_rules_keep_the_verdicts_and_order_of_the_rules(
        kernel_lab: KernelLab, tmp_path: Path) -> None:
    kernel_lab.publish(PORT, 80)
    for src in SOURCES:
        add_addr(kernel_lab.trusted.ns, "eth0", f"{src}/25")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-merge.rules").write_text(RULES)
    res = run_fwsync(kernel_lab, "apply", "--backend", "iptables", "--yes", rules=rules)
    assert res.returncode == 0, res.stderr

    # The reference: the unmerged rules walked one by one, in order.
    loaded = load_rules(rules)
    assert loaded.policy is not None
    ruleset = build_ruleset(loaded.policy, DockerState(error="not asked")).ruleset
    want = {src: decide(ruleset, parse_connection(src, f"{PORT}/tcp"),
                        ipaddress.ip_address(HOST_TRUSTED_V4)).action for src in SOURCES}
    assert [want[s] for s in SOURCES] == ["allow", "allow", "allow", "deny", "deny", "allow",
                                          "allow", "reject", "deny", "deny"]

    got = probe_from(kernel_lab, SOURCES)
    assert got == {src: WANT_STATE[want[src]] for src in SOURCES}

    # And merged it is: per protocol, one set match for .11-.13, the deny on its own line, one
    # set match for .14/.16/.17 after it.
    save = kernel_lab.host.run([f"iptables-{kernel_lab.variant}-save", "-t", "filter"]).stdout
    inbound = [line for line in save.splitlines() if line.startswith("-A FWSYNC-INBOUND")
               and "--ctorigdstport 5432" in line]
    tcp = [line for line in inbound if "-p tcp" in line]
    assert len(tcp) == 4, "\n".join(tcp)
    assert "--match-set fws4-src.0.0-" in tcp[0] and tcp[0].endswith("-j RETURN")
    assert "-s 198.51.100.12/30" in tcp[1] and tcp[1].endswith("-j DROP")
    assert "--match-set fws4-src.4.0-" in tcp[2] and tcp[2].endswith("-j RETURN")
    assert "-s 198.51.100.18/32" in tcp[3] and "REJECT" in tcp[3]
    sets = kernel_lab.host.run(["ipset", "list", "-name"]).stdout.split()
    first = next(n for n in sets if n.startswith("fws4-src.0.0-"))
    members = kernel_lab.host.run(["ipset", "save", first]).stdout
    assert sorted(line.split()[2] for line in members.splitlines()
                  if line.startswith("add ")) == ["198.51.100.11", "198.51.100.12",
                                                  "198.51.100.13"]

    # Nothing left to do: the kernel reads back as planned, sets included.
    again = run_fwsync(kernel_lab, "plan", "--backend", "iptables", "--detailed-exitcode",
                       "--full", rules=rules)
    assert again.returncode == 0, again.stdout + again.stderr
