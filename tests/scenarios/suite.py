"""The scenarios, written once for every world. Ports and who may reach them come from the
repo's rules/ (the rules both worlds run with):

    80    `allow 80,443/tcp`                         everyone
    5432  `allow from $office ... port 5432`         trusted only (198.51.100.0/25, 2001:db8:1::/64)
    6000  no rule                                    nobody (`default deny incoming`)
    8080  nothing published: ufw's own INPUT policy  nobody
    8088, 8089  the swarm scenario's service `web`: `allow from $office to service web`, a rules
          file it adds on both nodes (SWARM_RULES)
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from tests.scenarios.world import (
    SWARM_RULES,
    Capability,
    Node,
    ScenarioFailed,
    World,
    wait_state,
)

WEB, DB, OTHER, HOST_ONLY = 80, 5432, 6000, 8080
# A reboot under software emulation (TCG) takes minutes; dockerd's restart policy then needs
# its own start-up time before the container answers.
BOOT_TIMEOUT = 900.0
# Probe loops (one attempt every 0.5 s) go on for this many more attempts after the event:
# where it is over in a second (dockerd in a namespace), the loop still sees the moments just
# after it.
LINGER = 4


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise ScenarioFailed(message)


def expect_states(world: World, src: str, ports: list[int], want: list[str], why: str,
                  v6: bool = False, node: Node = "dockerhost") -> None:
    got = world.probe(src, ports, v6=v6, node=node)  # type: ignore[arg-type]
    where = "" if node == "dockerhost" else f" on {node}"
    expect(got == want, f"{why}: {src} -> {ports}{where}{' over IPv6' if v6 else ''}: got "
                        f"{got}, wanted {want}")


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[World], str | None]  # returns a note on what it saw, for the table
    fwsync: bool = True  # whether fwsync's daemon runs when the scenario starts
    needs: frozenset[Capability] = frozenset()  # beyond the common operations; VM-only if so


def seed_gotcha(world: World) -> str | None:
    world.publish("db", DB, restart_always=True)
    expect_states(world, "attacker", [DB, HOST_ONLY], ["open", "filtered"],
                  "the gotcha before fwsync: ufw blocks the host's ports, not Docker's")
    world.start_fwsync()
    expect(world.fwsync_running(), "fwsync's daemon is running")
    expect_states(world, "attacker", [DB, HOST_ONLY], ["filtered", "filtered"],
                  "after fwsync the attacker reaches neither")
    return None


def allowed_hosts(world: World) -> str | None:
    world.publish("db", DB)
    world.publish("web", WEB)
    world.publish("other", OTHER)  # started after fwsync: the default must cover it at once
    expect_states(world, "trusted", [DB, WEB, OTHER], ["open", "open", "filtered"],
                  "the office reaches postgres and the web, nothing unlisted")
    expect_states(world, "attacker", [DB, WEB, OTHER], ["filtered", "open", "filtered"],
                  "the attacker reaches only the public web")
    return None


def ipv6(world: World) -> str | None:
    world.publish("db", DB)
    world.publish("web", WEB)
    wait_state(world, "trusted", DB, "open", v6=True, timeout=30)
    expect_states(world, "trusted", [DB, WEB], ["open", "open"], "the office over IPv6", v6=True)
    expect_states(world, "attacker", [DB, WEB], ["filtered", "open"],
                  "the attacker over IPv6 reaches only the public web", v6=True)
    return None


def dockerd_restart(world: World) -> str | None:
    world.publish("db", DB, restart_always=True)
    with world.probing("attacker", DB) as attacker:
        world.restart_dockerd()
        waited = wait_state(world, "trusted", DB, "open", timeout=120)
        attacker.more_attempts(LINGER)
    expect(attacker.counts()["open"] == 0,
           f"the attacker connected while dockerd restarted: {attacker.summary()}")
    expect(len(attacker.attempts) >= 3, f"the probe loop ran: {attacker.summary()}")
    expect_states(world, "attacker", [DB], ["filtered"], f"after the restart ({waited:.0f} s)")
    expect(world.fwsync_running(), "fwsync's daemon still runs")
    return f"{attacker.summary()}; trusted back after {waited:.0f} s"


def ufw_reload(world: World) -> str | None:
    world.publish("db", DB)
    with world.probing("attacker", DB) as attacker:
        world.ufw_reload()
        attacker.more_attempts(LINGER)
    expect(attacker.counts()["open"] == 0,
           f"the attacker connected during `ufw reload`: {attacker.summary()}")
    expect(len(attacker.attempts) >= 3, f"the probe loop ran: {attacker.summary()}")
    expect_states(world, "trusted", [DB], ["open"], "the office after `ufw reload`")
    expect_states(world, "attacker", [DB, HOST_ONLY], ["filtered", "filtered"],
                  "ufw and fwsync both still enforce after `ufw reload`")
    return attacker.summary()


def reboot(world: World) -> str | None:
    world.publish("db", DB, restart_always=True)
    world.publish("web", WEB, restart_always=True)
    with world.probing("attacker", DB) as attacker, world.probing("trusted", DB) as trusted:
        world.reboot()
        wait_state(world, "trusted", DB, "open", timeout=BOOT_TIMEOUT)
        # The loop's own probes must see postgres back too, not only wait_state's: a loop
        # stopped right here once ended on probes still timing out (one failed CI run).
        trusted.wait(lambda log: log.outage() is not None, "postgres lost and back",
                     timeout=BOOT_TIMEOUT)
        attacker.more_attempts(LINGER)
    expect(attacker.counts()["open"] == 0,
           f"the attacker connected during the reboot: {attacker.summary()}")
    outage = trusted.outage()
    expect(outage is not None, f"trusted lost postgres during the reboot and got it back: "
                               f"{trusted.summary()}")
    assert outage is not None
    expect(len(attacker.attempts) >= 10, f"the probe loop spanned the boot: {attacker.summary()}")
    expect(world.fwsync_running(), "fwsync's daemon runs after the boot")
    _, fwsync_ready = world.unit_times("fwsync.service")
    docker_start, _ = world.unit_times("docker.service")
    expect(fwsync_ready <= docker_start,
           f"fwsync ready at {fwsync_ready:.2f} s after boot, dockerd started at "
           f"{docker_start:.2f} s: it must be ready first (Type=notify, Before=docker.service)")
    expect_states(world, "attacker", [DB, WEB, HOST_ONLY], ["filtered", "open", "filtered"],
                  "after the boot: the policy as before")
    return (f"{attacker.summary()}; trusted: down at {outage[0]:.0f} s, back at "
            f"{outage[1]:.0f} s; "
            f"fwsync ready {fwsync_ready:.1f} s, dockerd started {docker_start:.1f} s after boot")


NODES: tuple[Node, ...] = ("dockerhost", "dockerhost2")
MESH, MESH_ADDED = 8088, 8089
IMAGE = "fwsync-test/busybox:1"
WEB_CMD = "trap 'exit 0' TERM; httpd -f -p 80 -h /bin & wait"
SWARM_RULES_TEXT = ("# The swarm scenario's service (tests/scenarios/suite.py), on every node.\n"
                    "allow from $office to service web\n")
# What a Swarm administrator opens between the nodes (docs/swarm.md); the nodes share the office
# network here.
OPEN_SWARM_PORTS = ("ufw allow from 198.51.100.0/25 to any port 2377 proto tcp >/dev/null\n"
                    "ufw allow from 198.51.100.0/25 to any port 7946 >/dev/null\n"
                    "ufw allow from 198.51.100.0/25 to any port 4789 proto udp >/dev/null\n")
MESH_TIMEOUT = 300.0  # a service's first task, and the mesh on both nodes, under TCG


def fwsync_json(world: World, node: Node, *args: str) -> dict[str, object]:
    # doctor exits 3 when it finds something serious; the JSON is what matters here.
    out = world.run_on(node, f"fwsync {' '.join(args)} --format json; true")
    doc: dict[str, object] = json.loads(out)
    return doc


def swarm_port_findings(world: World, node: Node) -> list[str]:
    doc = fwsync_json(world, node, "doctor", "--sample", "0")
    return sorted(str(f["subject"]).rsplit(" ", 1)[-1]  # type: ignore[index]
                  for f in doc["findings"]  # type: ignore[attr-defined]
                  if f["check"] == "swarm-ports")


def mesh_row(world: World, node: Node, port: int) -> dict[str, object] | None:
    doc = fwsync_json(world, node, "status")
    return next((p for p in doc["ports"]  # type: ignore[attr-defined]
                 if p["host_port"] == port and p["mode"] == "ingress"), None)


def swarm(world: World) -> str | None:
    notes: list[str] = []
    # Every node: fwsync's daemon and the same rules (here one more file, on both).
    world.start_fwsync("dockerhost2")
    for node in NODES:
        world.run_on(node, f"cat >{SWARM_RULES} <<'EOF'\n{SWARM_RULES_TEXT}EOF")
    world.run_on("dockerhost", "docker swarm init --advertise-addr 198.51.100.2 "
                 "--default-addr-pool 203.0.113.192/26 --default-addr-pool-mask-length 28 "
                 ">/dev/null")
    found = swarm_port_findings(world, "dockerhost")
    expect(found == ["2377/tcp", "4789/udp", "7946/tcp", "7946/udp"],
           f"doctor on the new manager: ufw (deny incoming, allow 22/tcp) lets no node reach "
           f"what Swarm needs: {found}")
    for node in NODES:
        world.run_on(node, OPEN_SWARM_PORTS)
    token = world.run_on("dockerhost", "docker swarm join-token -q worker").strip()
    world.run_on("dockerhost2", f"docker swarm join --token {token} --advertise-addr "
                                "198.51.100.3 198.51.100.2:2377 >/dev/null")
    for node in NODES:
        found = swarm_port_findings(world, node)
        expect(found == [], f"doctor on {node} once ufw lets the nodes in: {found}")
    # One replica, on dockerhost: dockerhost2 runs no task, and answers on the mesh all the same.
    world.run_on("dockerhost", "docker service create --detach --no-resolve-image --name web "
                 "--replicas 1 --constraint node.hostname==dockerhost "
                 f"--publish {MESH}:80 {IMAGE} /bin/sh -c {shlex.quote(WEB_CMD)} >/dev/null")
    for node in NODES:
        took = wait_state(world, "trusted", MESH, "open", node=node, timeout=MESH_TIMEOUT)
        notes.append(f"trusted through {node} after {took:.0f} s")
    for node in NODES:
        expect_states(world, "attacker", [MESH], ["filtered"],
                      "the mesh port, allowed to the office only", node=node)
        enforcing = str(fwsync_json(world, node, "status")["enforcing"])
        expect(enforcing.startswith("yes, "),
               f"{node}: fwsync's rules come first (Docker's jump to DOCKER-INGRESS is below "
               f"DOCKER-USER): {enforcing}")
        notes.append(f"{node}: {' '.join(enforcing.split()[1:3])}")
        row = mesh_row(world, node, MESH)
        expect(row is not None and row["service"] == "web"
               and row["decisions"][0]["action"] == "allow",  # type: ignore[index]
               f"{node}'s status shows the mesh port as service web's, allowed by the "
               f"service rule: {row}")
    # A port added to the service while the attacker probes it on both nodes.
    with world.probing("attacker", MESH_ADDED) as on_1, \
            world.probing("attacker", MESH_ADDED, node="dockerhost2") as on_2:
        world.run_on("dockerhost", f"docker service update --detach --publish-add "
                                   f"{MESH_ADDED}:80 web >/dev/null")
        for node in NODES:
            took = wait_state(world, "trusted", MESH_ADDED, "open", node=node,
                              timeout=MESH_TIMEOUT)
            notes.append(f"--publish-add: trusted through {node} after {took:.0f} s")
        for log in (on_1, on_2):
            log.more_attempts(LINGER)
    for log in (on_1, on_2):
        expect(log.counts()["open"] == 0, f"the attacker connected to the added port: "
                                          f"{log.summary()}")
        expect(len(log.attempts) >= 3, f"the probe loop ran: {log.summary()}")
        notes.append(log.summary())
    # The node that runs no task reboots, both clients probing it throughout.
    with world.probing("attacker", MESH, node="dockerhost2") as attacker, \
            world.probing("trusted", MESH, node="dockerhost2") as trusted:
        world.reboot("dockerhost2")
        wait_state(world, "trusted", MESH, "open", node="dockerhost2", timeout=BOOT_TIMEOUT)
        trusted.wait(lambda log: log.outage() is not None, "the mesh lost and back",
                     timeout=BOOT_TIMEOUT)
        attacker.more_attempts(LINGER)
    expect(attacker.counts()["open"] == 0,
           f"the attacker connected during dockerhost2's reboot: {attacker.summary()}")
    expect(len(attacker.attempts) >= 10, f"the probe loop spanned the boot: {attacker.summary()}")
    for node in NODES:
        expect_states(world, "attacker", [MESH, MESH_ADDED], ["filtered", "filtered"],
                      "after the reboot", node=node)
    notes.append(f"reboot of dockerhost2: {attacker.summary()}; {trusted.summary()}")
    world.run_on("dockerhost", "docker service rm web >/dev/null")
    world.run_on("dockerhost2", "docker swarm leave >/dev/null")
    world.run_on("dockerhost", "docker swarm leave --force >/dev/null")
    for node in NODES:
        world.run_on(node, f"rm -f {SWARM_RULES}")
    return "; ".join(notes)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("seed-gotcha", "the Docker port is open before fwsync and closed after",
             seed_gotcha, fwsync=False),
    Scenario("allowed-hosts", "allowed clients connect, others do not, new containers too",
             allowed_hosts),
    Scenario("ipv6", "the same policy over IPv6", ipv6, needs=frozenset({"ipv6"})),
    Scenario("dockerd-restart", "no window while dockerd restarts (attacker probing)",
             dockerd_restart),
    Scenario("ufw-reload", "`ufw reload` keeps fwsync's rules (attacker probing)", ufw_reload),
    Scenario("reboot", "reboot with restart=always containers: the attacker never connects",
             reboot, needs=frozenset({"reboot", "systemd"})),
    Scenario("swarm", "two nodes, one service on the mesh: the attacker filtered on both nodes, "
             "trusted through both; --publish-add and a reboot open nothing",
             swarm, needs=frozenset({"swarm", "reboot", "systemd"})),
)


def applicable(world: World) -> list[Scenario]:
    return [s for s in SCENARIOS if s.needs <= world.capabilities]
