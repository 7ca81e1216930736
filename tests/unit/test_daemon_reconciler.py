"""The daemon's reconcile step against an in-memory kernel: the last good policy survives an
invalid edit, drift is what differs from what was enforced, Docker's absence keeps the last
known containers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fwsync.backends.base import BackendError
from fwsync.backends.iptables_render import render_family
from fwsync.core.counts import Decided
from fwsync.core.diff import Desired, Plan, State
from fwsync.core.enforcing import Enforcement, FamilyReach, nothing_held
from fwsync.core.observed import DockerState, PublishedPort, SwarmNode
from fwsync.core.ruleset import Ruleset
from fwsync.daemon.coalesce import Batch, Source, Trigger
from fwsync.daemon.drift import FULL_CHECK_EVERY
from fwsync.daemon.loop import Reconciler
from fwsync.daemon.metrics import Metrics
from fwsync.rules.load import load_rules

pytestmark = pytest.mark.unit


def _encoding(state: State) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted(state.items()))


class MemoryBackend:
    """A kernel in a dict; render is one object per rule and one for the published ports, and
    the iptables backend's own chains (the rules fwsync.verify reads back, as from iptables-save,
    to say whether they give the policy's verdicts). Like the nftables backend, it writes its
    own encoding of the objects (the plan's payload), not their lines: a plan without that
    encoding, or with one of other objects, fails."""

    name = "iptables"  # what fwsync.verify reads its iptables objects as
    proxy_catchall = False

    def __init__(self) -> None:
        self.kernel: dict[str, tuple[str, ...]] = {}
        self.applies = 0
        self.fail: str | None = None
        self.reads: list[bool] = []  # per read: was it a full one (every set element)?
        self.bypass = ""  # what another program put before the jump, if anything

    def detect(self) -> str:
        return "memory kernel"

    def decided(self) -> tuple[Decided, ...]:
        return ()  # a kernel in a dict counts nothing

    def holds(self) -> bool:
        return bool(self.kernel)

    def enforcement(self) -> Enforcement:
        # Reached when the jump is there and nobody put an accept before it (self.bypass).
        if not self.kernel:
            return nothing_held(self.name)
        reached = "jump" in self.kernel and not self.bypass
        return Enforcement(self.name, (FamilyReach(4, reached, self.bypass or "jump → chain"),))

    def read(self, desired: State | None = None) -> State:
        self.reads.append(desired is None)
        return dict(self.kernel)

    def render(self, ruleset: Ruleset) -> Desired:
        lines = tuple(f"{r.action} {r.match.saddr or r.match.sset or 'any'} "
                      f"{r.match.dport.low if r.match.dport else '*'}"
                      for r in ruleset.for_family(4))
        state = {"chain": (*lines, f"default {ruleset.default}"), "jump": ("entry",),
                 **render_family(ruleset, 4, ("DOCKER-USER",)),
                 **render_family(ruleset, 6, ("DOCKER-USER",))}
        return Desired(state, _encoding(state))

    def snapshot(self) -> Desired:
        return Desired(dict(self.kernel), _encoding(self.kernel))

    def check(self, plan: Plan) -> None:
        return None

    def apply(self, plan: Plan) -> None:
        if self.fail:
            raise BackendError(self.fail)
        if plan.payload != _encoding(plan.desired):
            raise BackendError("internal: the plan carries no objects of this backend to write")
        self.applies += 1
        self.kernel = dict(plan.payload)

    def remove(self) -> State:
        before, self.kernel = self.kernel, {}
        return before


def toy(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The memory backend's own objects among `keys` (not the iptables chains beside them)."""
    return tuple(k for k in keys if not k.startswith("ipv"))


def port(name: str, host_port: int) -> PublishedPort:
    return PublishedPort(host_ip="0.0.0.0", host_port=host_port, proto="tcp", container=name,
                         container_port=80)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.rules = tmp_path / "rules"
        self.rules.mkdir()
        self.docker = DockerState(ports=(port("web-1", 7000),), containers=("web-1",))
        self.asked = 0
        self.full: list[bool] = []
        self.backend = MemoryBackend()
        self.reconciler = Reconciler(self.rules, self.backend, lock_path=tmp_path / "lock",
                                     observe=self.observe)

    def observe(self, _timeout: int, full: bool) -> DockerState:
        self.asked += 1
        self.full.append(full)
        return self.docker

    def write(self, text: str) -> None:
        (self.rules / "10.rules").write_text(text)

    def run(self, source: Source = "docker", reason: str = "start web-1"):  # type: ignore[no-untyped-def]
        return self.reconciler.reconcile(Batch((Trigger(source=source, reason=reason, at=0.0,
                                                        wall=1.0),)))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield World(tmp_path)


GOOD = "default deny incoming\nallow from 198.51.100.0/25 to container web-*\n"


def test_enforcing_is_the_kernels_answer_after_the_reconcile(world: World) -> None:
    """The daemon's "enforcing" (systemd STATUS) is read back from the kernel after each
    reconcile, not taken from the reconcile's success."""
    world.write(GOOD)
    assert world.run("startup", "daemon started").result == "applied"
    assert world.reconciler.enforcement is not None and world.reconciler.enforcement.enforcing
    world.backend.bypass = "an ACCEPT comes first"
    assert world.run().result == "unchanged"
    reach = world.reconciler.enforcement
    assert reach is not None and reach.problems == ("IPv4: an ACCEPT comes first",)


def test_first_reconcile_applies_and_a_second_changes_nothing(world: World) -> None:
    world.write(GOOD)
    first = world.run("startup", "daemon started")
    assert first.result == "applied" and toy(first.changed) == ("chain", "jump")
    assert world.backend.kernel["chain"] == ("allow 198.51.100.0/25 7000", "default deny")
    again = world.run()
    assert again.result == "unchanged" and world.backend.applies == 1
    assert again.event_latency is not None and again.event_received == 1.0


def test_invalid_edit_keeps_the_last_good_policy_rebuilt_for_new_containers(
        world: World) -> None:
    world.write(GOOD)
    world.run("startup", "")
    world.write(GOOD + "allow from $nowhere to any port 9000\n")
    bad = world.run("rules", "changed")
    assert bad.result == "invalid-rules" and bad.policy == "last good rules"
    assert bad.diagnostics and bad.diagnostics[0].startswith(f"{world.rules}/10.rules:3:12: error:")
    assert world.backend.kernel["chain"] == ("allow 198.51.100.0/25 7000", "default deny")
    # A container the last good `to container` rule names starts meanwhile: it is governed.
    world.docker = DockerState(ports=(port("web-1", 7000), port("web-2", 7001)),
                               containers=("web-1", "web-2"))
    moved = world.run("docker", "start web-2")
    assert moved.result == "invalid-rules" and toy(moved.changed) == ("chain",)
    assert "allow 198.51.100.0/25 7001" in world.backend.kernel["chain"]
    assert not any("9000" in line for line in world.backend.kernel["chain"])
    world.write(GOOD)
    fixed = world.run("rules", "changed")
    assert fixed.result in ("applied", "unchanged") and fixed.policy == "rules"
    assert world.reconciler.rules_valid


def test_invalid_rules_at_start_adopt_what_the_kernel_holds(world: World) -> None:
    world.backend.kernel = {"chain": ("allow any 22", "default deny"), "jump": ("entry",)}
    world.write("nonsense here\n")
    out = world.run("startup", "")
    assert out.result == "invalid-rules" and out.policy == "kernel"
    assert world.reconciler.enforced is not None
    world.backend.kernel = {}  # someone flushed it
    assert world.reconciler.check_drift() == ("chain", "jump")
    repaired = world.run("drift", "chain, jump")
    assert repaired.drift == ("chain", "jump")
    assert world.backend.kernel["chain"] == ("allow any 22", "default deny")


def test_invalid_rules_and_an_empty_kernel_enforce_nothing(world: World) -> None:
    world.write("nonsense here\n")
    out = world.run("startup", "")
    assert out.result == "invalid-rules" and world.reconciler.enforced is None
    assert world.backend.applies == 0 and world.reconciler.check_drift() == ()


def test_drift_is_what_differs_from_what_was_enforced(world: World) -> None:
    world.write(GOOD)
    world.run("startup", "")
    assert world.reconciler.check_drift() == ()
    world.backend.kernel.pop("jump")
    assert world.reconciler.check_drift() == ("jump",)
    asked = world.asked
    out = world.run("drift", "jump")
    assert out.result == "applied" and out.drift == ("jump",)
    assert world.asked == asked, "a drift repair reuses the Docker state it knows"


def test_drift_checks_read_every_element_once_every_full_check_every(world: World) -> None:
    world.write(GOOD)
    world.run("startup", "")
    world.backend.reads.clear()
    for _ in range(2 * FULL_CHECK_EVERY):
        world.reconciler.check_drift()
    full = [i for i, was_full in enumerate(world.backend.reads, 1) if was_full]
    assert full == [FULL_CHECK_EVERY, 2 * FULL_CHECK_EVERY]


def test_a_drift_found_by_a_full_check_is_reconciled_with_a_full_read(world: World) -> None:
    """The reconcile reads at the depth of the check that found the drift: a same-count edit
    inside a big set is seen only by reading every element (before, it was read by name and
    count, found equal, and left in place: `result=unchanged`)."""
    world.write(GOOD)
    world.run("startup", "")
    for _ in range(FULL_CHECK_EVERY):
        world.reconciler.check_drift()
    assert world.reconciler.checked_full
    world.backend.reads.clear()
    found = Trigger(source="drift", reason="ipv6 set blocked", at=0.0, full=True)
    world.reconciler.reconcile(Batch((found,)))
    assert world.backend.reads[0] is True
    world.backend.reads.clear()
    world.run("drift", "jump")  # found by a cheap check: a cheap read
    assert world.backend.reads[0] is False


def test_docker_away_keeps_what_narrows_of_the_last_known_containers(world: World) -> None:
    world.write("default allow\ndeny from 198.51.100.0/25 to container web-*\n")
    world.run("startup", "")
    world.docker = DockerState(error="cannot reach Docker at unix:///x: refused")
    out = world.run("rules", "changed")
    assert out.result == "unchanged", "the deny still matches web-1's port"
    assert out.docker_error and any("last observed state" in n for n in out.notes)


def test_docker_away_withdraws_an_allow_to_a_container(world: World) -> None:
    """web-1's port may be another container's by now: an allow for it is not kept from the
    last look; it comes back when Docker answers. A drift repair in between builds as the
    reconcile before it did, instead of putting the allow back from the last good look."""
    world.write(GOOD)
    world.run("startup", "")
    assert "allow 198.51.100.0/25 7000" in world.backend.kernel["chain"]
    world.docker = DockerState(error="cannot reach Docker at unix:///x: refused")
    out = world.run("resync", "every 600 s")
    assert out.result == "applied" and world.backend.kernel["chain"] == ("default deny",)
    assert world.run("drift", "").result == "unchanged"
    world.docker = DockerState(ports=(port("web-1", 7000),), containers=("web-1",))
    world.run("reconnect", "reconnected: re-listing Docker")
    assert "allow 198.51.100.0/25 7000" in world.backend.kernel["chain"]


def test_a_kernel_error_is_an_outcome_not_a_crash(world: World) -> None:
    world.write(GOOD)
    world.backend.fail = "iptables-restore: nope; nothing was changed"
    out = world.run("startup", "")
    assert out.result == "error" and "nothing was changed" in (out.error or "")
    assert world.reconciler.enforced is None


def test_rules_fingerprint_notices_edits(world: World) -> None:
    world.write(GOOD)
    world.run("startup", "")
    assert not world.reconciler.rules_changed()
    (world.rules / "20.rules").write_text("allow 80/tcp\n")
    assert world.reconciler.rules_changed()
    (world.rules / ".20.rules.swp").write_text("x")
    world.run("rules", "")
    (world.rules / ".20.rules.swp").write_text("xy")
    assert not world.reconciler.rules_changed(), "editor files are not rules"


def test_a_worker_notices_a_new_mesh_port_in_its_ingress_chain(world: World) -> None:
    world.write(GOOD)
    mesh = frozenset({("tcp", 8088)})
    world.docker = DockerState(swarm=SwarmNode(manager=False), mesh_chain=mesh)
    world.run("startup", "")
    assert not world.reconciler.mesh_changed(lambda: set(mesh))
    assert world.reconciler.mesh_changed(lambda: {("tcp", 8088), ("tcp", 8089)})
    assert not world.reconciler.mesh_changed(lambda: None), "unreadable: no news"
    # The chain has a port the ingress network names no service for yet: look again, but not
    # on every tick.
    world.docker = DockerState(swarm=SwarmNode(manager=False), mesh_chain=mesh,
                               mesh_pending=mesh)
    world.run("swarm", "")
    looked = world.reconciler._looked_at
    assert not world.reconciler.mesh_changed(lambda: set(mesh), now=looked + 1)
    assert world.reconciler.mesh_changed(lambda: set(mesh), now=looked + 10)
    world.docker = DockerState(swarm=SwarmNode(manager=True), mesh_chain=None)
    world.run("swarm", "")
    assert not world.reconciler.mesh_changed(lambda: {("tcp", 1)}), "managers get events"


def test_a_kernel_that_reads_back_differently_stays_drift(world: World) -> None:
    """A competing writer puts an ACCEPT above fwsync's jump right after each apply: the
    read-back differs (the backend's `not reached:` line). The daemon must not take that as
    what it enforces: the drift check keeps finding it, every reconcile repairs and reports it,
    and once the writer stops, the repair holds."""
    world.write(GOOD)
    backend = world.backend
    written = backend.apply
    competing = True

    def apply_then_bypassed(plan: Plan) -> None:
        written(plan)
        if competing:
            backend.kernel["jump"] = ("entry", "not reached: `-A FORWARD -j ACCEPT` comes first")

    backend.apply = apply_then_bypassed  # type: ignore[method-assign]
    first = world.run("startup", "")
    assert first.result == "applied"
    assert any("reads back differently" in n and "jump" in n for n in first.notes), first.notes
    for _ in range(3):
        assert world.reconciler.check_drift() == ("jump",), "the bypass went quiet"
        repaired = world.run("drift", "jump")
        assert repaired.drift == ("jump",)
    competing = False
    assert world.reconciler.check_drift() == ("jump",)
    world.run("drift", "jump")
    assert backend.kernel["jump"] == ("entry",)
    assert world.reconciler.check_drift() == ()


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def rules_info(metrics: Metrics) -> list[dict[str, str]]:
    return [s.labels for f in metrics.registry.collect() for s in f.samples
            if s.name == "fwsync_rules_info" and s.value == 1]


def test_the_gauges_say_what_the_kernel_read_back_says(world: World) -> None:
    """Real outcomes into a real Metrics: fwsync_enforcing is the kernel's answer (the memory
    kernel knows IPv4 only: IPv6 is not enforced), fwsync_in_sync whether the kernel holds what
    the rules say, and the two differ when something accepts before fwsync's jump."""
    metrics = Metrics()
    assert gauge(metrics, "fwsync_enforcing", family="4") == 0, "0 before any reconcile"
    world.write(GOOD)
    metrics.record(world.run("startup", ""))
    assert gauge(metrics, "fwsync_enforcing", family="4") == 1
    assert gauge(metrics, "fwsync_enforcing", family="6") == 0
    assert gauge(metrics, "fwsync_in_sync") == 1
    policy = load_rules(world.rules).policy
    assert policy is not None
    assert rules_info(metrics) == [{"digest": policy.digest, "commit": ""}]

    world.backend.bypass = "an ACCEPT comes first"
    metrics.record(world.run())
    assert gauge(metrics, "fwsync_enforcing", family="4") == 0
    assert gauge(metrics, "fwsync_in_sync") == 1, "fwsync's objects are as the rules say"
    world.backend.bypass = ""

    metrics.drifted()  # what the daemon does when a drift check finds a change
    assert gauge(metrics, "fwsync_in_sync") == 0
    metrics.record(world.run("drift", "jump"))
    assert gauge(metrics, "fwsync_in_sync") == 1


def test_invalid_rules_keep_the_last_good_digest_and_are_not_in_sync(world: World) -> None:
    metrics = Metrics()
    world.write(GOOD)
    metrics.record(world.run("startup", ""))
    good = rules_info(metrics)
    world.write(GOOD + "allow from $nowhere to any port 9000\n")
    metrics.record(world.run("rules", "changed"))
    assert gauge(metrics, "fwsync_rules_valid") == 0 and gauge(metrics, "fwsync_in_sync") == 0
    assert gauge(metrics, "fwsync_enforcing", family="4") == 1, "the last good rules are"
    assert rules_info(metrics) == good
    world.write(GOOD + "allow from 192.0.2.1 to any port 9000\n")
    metrics.record(world.run("rules", "changed"))
    edited = rules_info(metrics)
    assert len(edited) == 1 and edited != good, "one series: the old digest's is gone"
    assert gauge(metrics, "fwsync_in_sync") == 1


def test_a_kernel_that_reads_back_differently_is_not_in_sync(world: World) -> None:
    metrics = Metrics()
    world.write(GOOD)
    written = world.backend.apply

    def apply_then_bypassed(plan: Plan) -> None:
        written(plan)
        world.backend.kernel["jump"] = ("entry", "not reached: `-A FORWARD -j ACCEPT` first")

    world.backend.apply = apply_then_bypassed  # type: ignore[method-assign]
    metrics.record(world.run("startup", ""))
    assert gauge(metrics, "fwsync_in_sync") == 0


def test_an_error_before_anything_is_enforced_is_not_enforcing(world: World) -> None:
    metrics = Metrics()
    world.write(GOOD)
    world.backend.fail = "iptables-restore: nope; nothing was changed"
    metrics.record(world.run("startup", ""))
    assert gauge(metrics, "fwsync_enforcing", family="4") == 0
    assert gauge(metrics, "fwsync_in_sync") == 0 and rules_info(metrics) == []


def test_the_rules_commit_is_the_checkout_of_the_rules(world: World) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")  # make install installs it
    world.write(GOOD)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(world.rules), "-c", "user.name=t",
                               "-c", "user.email=t@example.org", *args], check=True,
                              capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "rules")
    out = world.run("startup", "")
    assert out.rules_commit == git("rev-parse", "HEAD") and len(out.rules_commit) == 40
