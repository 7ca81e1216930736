"""`fwsync import-ufw` round trip on a real ufw: configure ufw inside the Docker host's namespace
(its own copy of /etc/ufw and /etc/default in /etc/netns/HOST), record the verdicts ufw gives for
the host's own ports, import, apply, publish containers on the same ports, and check that real
packets from the trusted and attacker neighbours get the same verdicts, over IPv4 and IPv6.
Once per fwsync backend."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import DockerLab, Peer, State, probe_many
from tests.steps import fwsync_ok

pytestmark = pytest.mark.e2e

# After DockerLab.enable_ufw: default deny incoming, allow 22/tcp.
UFW_COMMANDS = [
    ["allow", "80/tcp"],
    ["allow", "from", "198.51.100.0/25", "to", "any", "port", "5432", "proto", "tcp",
     "comment", "postgres for the office"],
    ["limit", "2222/tcp"],
    ["deny", "from", "203.0.113.0/25", "to", "any", "port", "8080", "proto", "tcp"],
    ["allow", "8080/tcp"],
    ["reject", "8443/tcp"],
    ["allow", "from", "2001:db8:1::/64", "to", "any", "port", "9100", "proto", "tcp"],
    # No fwsync equivalent: must be reported, and change no verdict.
    ["allow", "out", "25/tcp"],
    ["deny", "out", "to", "203.0.113.9"],
    ["route", "allow", "in", "on", "v-trusted", "out", "on", "docker0", "to", "198.51.100.130",
     "port", "80", "proto", "tcp"],
]
PORTS = (22, 80, 5432, 2222, 8080, 8443, 9100, 6000)  # 6000: no rule, the default decides
UNTRANSLATED = ("ufw allow out 25/tcp", "ufw deny out to 203.0.113.9",
                "ufw route allow in on v-trusted out on docker0 to 198.51.100.130 port 80 "
                "proto tcp")

# A dual-stack accept-and-close server on the host itself, standing in for its own services.
_LISTEN = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(64); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
"""

Verdicts = dict[tuple[str, str, int], State]  # (peer, family, port) → verdict



def verdicts(lab: DockerLab) -> Verdicts:
    found: Verdicts = {}
    peers: tuple[tuple[str, Peer], ...] = (("trusted", lab.trusted), ("attacker", lab.attacker))
    for name, peer in peers:
        targets = [(peer.host_addr(v6), port, "tcp") for v6 in (False, True) for port in PORTS]
        states = probe_many(peer, targets)
        for (addr, port, _), state in zip(targets, states, strict=True):
            found[(name, "v6" if ":" in addr else "v4", port)] = state
    return found


def host_verdicts(lab: DockerLab) -> Verdicts:
    """What ufw answers for the host's own services on PORTS."""
    server = lab.host.spawn([sys.executable, "-I", "-c", _LISTEN, *map(str, PORTS)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        return verdicts(lab)
    finally:
        server.kill()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


def digest(*paths: str) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).exists() else "-"
            for p in paths]


@pytest.mark.usefixtures("backend")
def test_imported_ufw_rules_give_containers_ufws_verdicts(make_docker_lab,
                                                          tmp_path: Path) -> None:
    machine = digest("/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/default/ufw")
    lab: DockerLab = make_docker_lab(ipv6=True)
    lab.enable_ufw()
    for command in UFW_COMMANDS:
        lab.ufw(*command)
    etc = Path("/etc/netns") / lab.host.name
    assert digest("/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/default/ufw") == machine, \
        "ufw in the namespace must write its private copy, never the machine's files"

    ufw_says = host_verdicts(lab)
    # ufw is really enforcing what it was told (otherwise the comparison below proves nothing).
    assert ufw_says[("trusted", "v4", 5432)] == "open"
    assert ufw_says[("attacker", "v4", 5432)] == "filtered"
    assert ufw_says[("trusted", "v6", 5432)] == "filtered"  # the office rule is IPv4 only
    assert ufw_says[("attacker", "v4", 8080)] == "filtered"
    assert ufw_says[("attacker", "v6", 8080)] == "open"
    assert ufw_says[("trusted", "v6", 9100)] == "open"
    assert ufw_says[("attacker", "v4", 8443)] == "closed"
    assert ufw_says[("attacker", "v4", 6000)] == "filtered"

    rules = tmp_path / "rules"
    rules.mkdir()
    out = rules / "10-ufw.rules"
    res = fwsync_ok(lab, "import-ufw", "--ufw-dir", str(etc / "ufw"),
                    "--default-file", str(etc / "default" / "ufw"), "--output", str(out))
    for command in UNTRANSLATED:
        assert f"not imported: {command}" in res.stderr, res.stderr
        assert "# NOT IMPORTED (" in out.read_text() and command in out.read_text()
    assert "default deny incoming" in out.read_text()
    check = fwsync_ok(lab, "check", str(rules))
    assert "OK (8 rules" in check.stdout, check.stdout + out.read_text()

    # The same import with the default paths, run where ufw itself reads its config: `ip netns
    # exec` shows the namespace's private /etc/ufw and /etc/default at their usual places.
    inside = lab.host.run([sys.executable, "-m", "fwsync", "import-ufw"])

    def statements(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]

    assert statements(inside.stdout) == statements(out.read_text())

    lab.run_web("svc", {f"{port}/tcp": port for port in PORTS})
    before = verdicts(lab)
    assert before[("attacker", "v4", 5432)] == "open", "the gotcha: ufw's policy misses Docker"

    fwsync_ok(lab, "apply", rules=rules)
    after = verdicts(lab)
    differ = {k: (ufw_says[k], after[k]) for k in ufw_says if ufw_says[k] != after[k]}
    assert differ == {}, f"(ufw for the host, fwsync for the container) differ: {differ}"
