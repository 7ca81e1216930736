"""`apply --confirm-within`'s parts that need no kernel: the pending record round-trips
exactly (a revert writes back what it read), the timer's command lines, the detached revert
process (really started: a session of its own, no terminal, our pipes not held), what status
and the daemon make of the records. The kernel side: tests/kernel/test_confirm_within.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from fwsync.present_pending import rollout_status
from fwsync.rollout import timer
from fwsync.rollout.pending import (
    Pending,
    PendingUnreadable,
    Snapshot,
    pending_path,
    read_pending,
    read_revert_record,
    release_hold,
    revert_record_path,
    write_pending,
    write_revert_record,
)
from fwsync.rollout.revert import pending_refusal, reverted_hold, window_hold
from tests.json_schemas import assert_valid

pytestmark = pytest.mark.unit

# nftables' payload is the table's objects as libnftables' JSON lists them (writable_objects):
# nested dicts and lists, ints, strings; iptables' is None (its lines are what it writes).
NFT_PAYLOAD = [
    {"table": {"family": "inet", "name": "fwsync"}},
    {"set": {"family": "inet", "table": "fwsync", "name": "office_v4_0123abcd",
             "type": "ipv4_addr", "flags": ["interval"],
             "elem": [{"prefix": {"addr": "198.51.100.0", "len": 25}}, "203.0.113.7"]}},
    {"rule": {"family": "inet", "table": "fwsync", "chain": "inbound", "comment": "10.rules:2",
              "expr": [{"match": {"op": "==", "left": {"payload": {
                  "protocol": "tcp", "field": "dport"}}, "right": 80}},
                       {"counter": {"packets": 3, "bytes": 180}}, {"accept": None}]}},
]


def pending(deadline: float = 2e9, **kw: object) -> Pending:
    fields: dict[str, object] = dict(
        token="0123456789abcdef", backend="nftables", applied_at=1.7e9, deadline=deadline,
        by="root ssh from 198.51.100.7", rules="/etc/fwsync/rules", rules_digest="ab" * 32,
        snapshots=(Snapshot("nftables", {"inet fwsync chain inbound": ("tcp dport 80 accept",
                                                                        "drop")}, NFT_PAYLOAD),
                   Snapshot("iptables", {}, None)),
        timer={"kind": "process", "pid": 42, "start": 7, "log": "/x"})
    fields.update(kw)
    return Pending(**fields)  # type: ignore[arg-type]


def test_the_pending_record_round_trips_exactly() -> None:
    p = pending()
    assert write_pending(p) is None
    back = read_pending()
    assert back == p
    assert isinstance(back.snapshots[0].state["inet fwsync chain inbound"], tuple)
    assert back.snapshots[0].desired().payload == NFT_PAYLOAD


def test_no_record_is_none_and_a_broken_one_still_means_pending() -> None:
    assert read_pending() is None
    pending_path().write_text("{not json")
    with pytest.raises(PendingUnreadable):
        read_pending()
    assert "may be pending" in (pending_refusal() or "")
    assert "unreadable" in (window_hold() or "")


def test_systemd_run_command_line() -> None:
    """systemd is not PID 1 on the test machine, so the transient timer cannot run here: the
    command line it is started with is checked instead (the process timer runs for real, in
    the kernel test)."""
    env = {"FWSYNC_PENDING": "/tmp/p.json", "FWSYNC_LOCK_FILE": "/tmp/l", "HOME": "/root",
           "DOCKER_HOST": "unix:///x.sock", "PYTHONPATH": "/src"}
    cmd = timer.systemd_run_command("0123abcd", 30, env)
    assert cmd[0] == "systemd-run"
    assert "--unit=fwsync-revert-0123abcd" in cmd and "--collect" in cmd
    assert "--on-active=30.000s" in cmd
    assert "--timer-property=AccuracySec=100ms" in cmd  # not systemd's default of 1 min
    assert [c for c in cmd if c.startswith("--setenv=")] == [
        "--setenv=DOCKER_HOST=unix:///x.sock", "--setenv=FWSYNC_LOCK_FILE=/tmp/l",
        "--setenv=FWSYNC_PENDING=/tmp/p.json", "--setenv=PYTHONPATH=/src"]
    assert cmd[cmd.index("--") + 1:] == [sys.executable, "-m", "fwsync", "revert-pending",
                                         "--token", "0123abcd"]
    assert timer.revert_command("t", 12.5)[-2:] == ["--wait-until", "12.500"]


def test_the_timer_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FWSYNC_REVERT_TIMER", "systemd")
    assert timer.use_systemd()
    monkeypatch.setenv("FWSYNC_REVERT_TIMER", "process")
    assert not timer.use_systemd()
    monkeypatch.delenv("FWSYNC_REVERT_TIMER")
    if not timer.SYSTEMD_DIR.is_dir():
        assert not timer.use_systemd()


def test_the_detached_process_has_a_session_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "revert.log"
    script = ("import os, sys, time; print(os.getsid(0), os.getpgrp(), os.getppid(),"
              " os.isatty(0), flush=True); time.sleep(30)")
    # Named like the revert (its cmdline is checked before it is killed).
    pid = timer.spawn_detached([sys.executable, "-c", script, "revert-pending", "tok"], log)
    try:
        for _ in range(100):
            if log.read_text():
                break
            time.sleep(0.05)
        sid, pgrp, _ppid, tty = log.read_text().split()
        assert int(sid) not in (os.getsid(0), pid)  # not ours; and it leads no session
        assert int(pgrp) != os.getpgrp() and tty == "False"
        info = {"kind": "process", "pid": pid, "start": timer.start_time(pid)}
        assert timer.is_revert_process(info, "tok")
        assert not timer.is_revert_process(info, "other-token")
        assert not timer.is_revert_process({**info, "start": -1}, "tok")  # a reused pid
        assert timer.stop_timer(info, "tok") is None
        for _ in range(100):
            if timer.start_time(pid) is None or _zombie(pid):
                break
            time.sleep(0.05)
        assert timer.start_time(pid) is None or _zombie(pid)
    finally:
        if timer.start_time(pid) is not None:
            os.kill(pid, 9)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_status_and_the_daemon_read_the_records() -> None:
    now = 1.9e9
    p = pending(deadline=now + 42)
    write_pending(p)
    lines, data = rollout_status(now)
    assert lines and "reverts in 42 s unless `fwsync confirm`" in lines[0]
    assert data["pending"]["seconds_left"] == 42 and data["last_revert"] is None
    assert "waiting for an unconfirmed apply" in (window_hold(now) or "")
    assert "is waiting for confirmation" in (pending_refusal(now) or "")
    pending_path().unlink()
    assert window_hold(now) is None and pending_refusal(now) is None
    write_revert_record({"token": p.token, "by": p.by, "rules": p.rules, "backend": p.backend,
                         "applied_at": p.applied_at, "deadline": p.deadline,
                         "reverted_at": now + 43, "reverted_by": "timer",
                         "result": "reverted", "error": None, "hold": True,
                         "rules_digest": p.rules_digest})
    lines, data = rollout_status(now + 50)
    assert any("was reverted at" in line for line in lines), lines
    assert data["pending"] is None and data["last_revert"]["result"] == "reverted"
    doc = {"rollout": data}
    from tests.json_schemas import load_schema

    schema = load_schema("status")["properties"]["rollout"]
    from jsonschema import validate

    validate(doc["rollout"], schema)
    # The daemon holds off the reverted rules, and only those, until an apply releases them.
    assert reverted_hold(p.rules_digest) is not None
    assert reverted_hold("ef" * 32) is None
    release_hold()
    assert reverted_hold(p.rules_digest) is None
    assert read_revert_record() is not None and revert_record_path().exists()


def test_the_status_document_with_a_pending_change_is_valid() -> None:
    write_pending(pending(deadline=time.time() + 10))
    _lines, data = rollout_status()
    assert_valid("status", {**_minimal_status(), "rollout": data})
    assert json.dumps(data)


def _minimal_status() -> dict[str, object]:
    return {"format_version": 1, "fwsync_version": "0", "enforcing": "no", "in_sync": False,
            "docker_error": None, "ports": [], "warnings": [], "daemon": None}
