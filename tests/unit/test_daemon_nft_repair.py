"""What the daemon does with a change heard on netlink (service.Daemon._check_and_repair),
against the in-memory kernel of test_daemon_reconciler: a change of fwsync's own objects is
repaired without a check first, a change of a chain it only jumps from is checked first and
left alone when nothing drifted, and the repair says it was the netlink event that found it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwsync.daemon.nft_watch import Change
from fwsync.daemon.service import Daemon, DaemonConfig
from tests.unit.test_daemon_reconciler import GOOD, World

pytestmark = pytest.mark.unit


def daemon_for(world: World) -> Daemon:
    daemon = Daemon(DaemonConfig(rules=world.rules))
    daemon.reconciler = world.reconciler
    return daemon


def test_a_change_of_fwsyncs_objects_is_repaired_at_once(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.write(GOOD)
    daemon = daemon_for(world)
    assert daemon._check_and_repair(Change(at=0.0, wall=0.0, elements=False, pid=1, own=True)) \
        is None  # nothing enforced yet: the first reconcile is what comes next
    world.run("startup", "")
    world.backend.kernel.pop("chain")  # someone flushed fwsync's chain
    checks: list[object] = []
    monkeypatch.setattr(world.reconciler, "check_drift", lambda full=None: checks.append(full))
    out = daemon._check_and_repair(Change(at=0.0, wall=0.0, elements=False, pid=1, own=True))
    assert out is not None and out.result == "applied" and out.drift == ("chain",)
    assert out.detected_by == "netlink" and out.drift_latency is not None
    assert checks == [], "the reconcile's own read and diff are the check"


def test_a_change_of_an_entry_chain_is_checked_first(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.write(GOOD)
    daemon = daemon_for(world)
    world.run("startup", "")
    applies = world.backend.applies
    assert daemon._check_and_repair(Change(at=0.0, wall=0.0, elements=False, pid=1)) is None
    assert world.backend.applies == applies
    world.backend.kernel.pop("jump")
    world.backend.reads.clear()
    out = daemon._check_and_repair(Change(at=0.0, wall=0.0, elements=True, pid=1))
    assert out is not None and out.drift == ("jump",)
    assert world.backend.reads[:2] == [True, True], "an element edit: check and repair in full"
