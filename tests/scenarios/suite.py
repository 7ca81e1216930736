"""The scenarios, written once for every world. Ports and who may reach them come from the
repo's rules/ (the rules both worlds run with):

    80    `allow 80,443/tcp`                         everyone
    5432  `allow from $office ... port 5432`         trusted only (198.51.100.0/25, 2001:db8:1::/64)
    6000  no rule                                    nobody (`default deny incoming`)
    8080  nothing published: ufw's own INPUT policy  nobody
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.scenarios.world import Capability, ScenarioFailed, World, wait_state

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
                  v6: bool = False) -> None:
    got = world.probe(src, ports, v6=v6)  # type: ignore[arg-type]
    expect(got == want, f"{why}: {src} -> {ports}{' over IPv6' if v6 else ''}: got {got}, "
                        f"wanted {want}")


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
)


def applicable(world: World) -> list[Scenario]:
    return [s for s in SCENARIOS if s.needs <= world.capabilities]
