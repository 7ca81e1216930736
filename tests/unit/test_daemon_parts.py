"""The daemon's small pure parts: which Docker events matter, sd_notify on a real socket, the
state file `fwsync status` shows, metrics addresses and counters, log lines."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from fwsync.daemon.coalesce import Trigger
from fwsync.daemon.docker_events import EVENT_FILTERS, classify
from fwsync.daemon.logs import JsonFormatter, TextFormatter
from fwsync.daemon.loop import Outcome
from fwsync.daemon.metrics import Metrics, parse_address
from fwsync.daemon.notify import sd_notify, status_line, watchdog_interval
from fwsync.daemon.rules_watch import fingerprint, relevant
from fwsync.daemon.state import describe, read_state, write_state

pytestmark = pytest.mark.unit


def ev(kind: str, action: str, **attrs: str) -> dict[str, object]:
    # The API 1.41+ shape; Docker 29 (API 1.52) sends only these fields.
    return {"Type": kind, "Action": action, "scope": "local", "timeNano": 1,
            "Actor": {"ID": "0123456789abcdef0123", "Attributes": attrs}}


@pytest.mark.parametrize(("event", "reason", "lazy"), [
    (ev("container", "start", name="web-1", image="x"), "start web-1", False),
    (ev("container", "die", name="web-1", exitCode="0"), "die web-1", False),
    (ev("container", "rename", name="web-2", oldName="/web-1"), "rename web-2", False),
    (ev("container", "destroy", name="web-1"), "destroy web-1", True),
    (ev("network", "connect", name="bridge", container="abcdef0123456789", type="bridge"),
     "network connect bridge abcdef012345", True),
    (ev("network", "disconnect", name="bridge", container="abcdef0123456789"),
     "network disconnect bridge abcdef012345", True),
    (ev("network", "create", name="front", type="bridge"), "network create front", False),
    (ev("network", "destroy", name="front"), "network destroy front", True),
    (ev("container", "start"), "start 0123456789ab", False),  # no name: the short id
])
def test_events_that_change_what_is_published(event: dict[str, object], reason: str,
                                              lazy: bool) -> None:
    t = classify(event, 5.0, 1000.0)
    assert t is not None
    assert (t.source, t.reason, t.lazy, t.at, t.wall) == ("docker", reason, lazy, 5.0, 1000.0)


@pytest.mark.parametrize("event", [
    ev("container", "create", name="web-1"),  # not running yet: publishes nothing
    ev("container", "exec_start: sh -c true", name="web-1"),
    ev("container", "health_status: healthy", name="web-1"),
    ev("container", "kill", name="web-1", signal="15"),  # `die` follows
    ev("container", "stop", name="web-1"),
    ev("image", "pull", name="busybox"),
    ev("volume", "create", name="v"),
    {"status": "start", "id": "abc", "from": "busybox"},  # the pre-1.22 shape only: ignored
    {},
])
def test_events_that_do_not(event: dict[str, object]) -> None:
    assert classify(event, 0.0, 0.0) is None


@pytest.mark.parametrize(("event", "reason", "lazy"), [
    (ev("service", "create", name="web"), "service create web", False),
    (ev("service", "update", name="web", **{"updatestate.new": "updating"}),
     "service update web", False),
    (ev("service", "remove", name="web"), "service remove web", False),
    # `docker swarm join`/`leave` make and remove the mesh's networks on the node.
    (ev("network", "create", name="docker_gwbridge", type="bridge"),
     "network create docker_gwbridge", False),
    (ev("network", "create", name="ingress", type="overlay"), "network create ingress", False),
    (ev("network", "destroy", name="ingress", type="overlay"), "network destroy ingress", True),
])
def test_swarm_events_are_served_as_docker_events(event: dict[str, object], reason: str,
                                                 lazy: bool) -> None:
    t = classify(event, 5.0, 1000.0)
    assert t is not None and t.is_event
    assert (t.source, t.reason, t.lazy) == ("swarm", reason, lazy)


def test_docker_is_asked_for_exactly_the_events_that_matter() -> None:
    assert EVENT_FILTERS["type"] == ["container", "network", "service"]
    for action in EVENT_FILTERS["event"]:
        assert any(classify(ev(kind, action, name="x"), 0, 0) for kind in EVENT_FILTERS["type"])


def test_sd_notify_writes_one_datagram_to_a_real_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        assert sd_notify("READY=1\nSTATUS=enforcing", {"NOTIFY_SOCKET": str(path)})
        assert server.recv(4096) == b"READY=1\nSTATUS=enforcing"


def test_sd_notify_abstract_socket() -> None:
    name = f"fwsync-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_without_a_socket_is_a_no_op(tmp_path: Path) -> None:
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}), \
        "a missing socket is logged, not raised"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) \
        == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_status_line_is_one_line() -> None:
    assert status_line("a\nb   c") == "STATUS=a b c"


def test_rules_paths_that_matter(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    assert relevant(d, d / "10-web.rules") and relevant(d, d)
    assert not relevant(d, d / ".10-web.rules.swp") and not relevant(d, d / "notes.txt")
    assert not relevant(d, tmp_path / "other.rules")
    f = tmp_path / "fwsync.rules"
    assert relevant(f, f) and not relevant(f, tmp_path / "x.rules")
    assert fingerprint(tmp_path / "missing") == ()


def outcome(**kw: object) -> Outcome:
    base: dict[str, object] = {"result": "applied", "trigger": "docker: start web-1",
                               "sources": ("docker",), "started": 1000.0, "duration": 0.042,
                               "counts": {"add": 2, "remove": 1, "objects": 1},
                               "changed": ("ipv4 chain FWSYNC-INBOUND",), "backend": "iptables",
                               "ports": 3, "policy": "rules"}
    base.update(kw)
    return Outcome(**base)  # type: ignore[arg-type]


def test_state_file_round_trip_and_description(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run" / "daemon.json"
    monkeypatch.setenv("FWSYNC_DAEMON_STATE", str(path))
    assert read_state() is None
    assert describe(None)[0] == f"Daemon: not running (no state in {path})"
    last = outcome()
    write_state({"pid": os.getpid(), "started": 990.0, "docker_connected": True,
                 "drift_repairs": 2, "last_drift": 995.0,
                 "last_reconcile": {"at": 1000.042, **last.fields()}})
    data = read_state()
    assert data is not None and data["running"] is False, "pytest's pid is not an fwsync"
    data["running"] = True
    lines = describe(data, now=1003.0)
    assert lines[0].startswith(f"Daemon: running (pid {os.getpid()}, since 13 s ago)")
    assert lines[1] == ("  last reconcile 3 s ago: applied (+2 -1 lines in 1 objects) after "
                        "docker: start web-1; 42.0 ms")
    assert lines[2] == "  drift repaired 2 times, last 8 s ago"
    assert not list(path.parent.glob(".*")), "written through a temporary file, renamed"


def test_describe_invalid_rules() -> None:
    last = outcome(result="invalid-rules", diagnostics=("r/10.rules:3:12: error: unknown set",))
    lines = describe({"pid": 1, "running": True, "started": 0,
                      "last_reconcile": {"at": 1, **last.fields()}}, now=2)
    assert "  rules: r/10.rules:3:12: error: unknown set" in lines


def test_metrics_addresses() -> None:
    assert parse_address("127.0.0.1:9817") == ("127.0.0.1", 9817)
    assert parse_address(":9817") == ("0.0.0.0", 9817)
    assert parse_address("[::1]:9817") == ("::1", 9817)
    for bad in ("9817", "host:", "127.0.0.1:99999", "not-an-ip:80"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_metrics_count_what_happened() -> None:
    m = Metrics()
    m.trigger("docker")
    m.trigger("docker")
    m.record(outcome(event_latency=0.03))
    m.record(outcome(result="unchanged", drift=("ipv4 jump",), counts={}))
    m.record(outcome(result="invalid-rules"))
    m.record(outcome(result="error", ports=None, error="x"))

    def value(name: str, **labels: str) -> float:
        got = m.registry.get_sample_value(name, labels)
        assert got is not None, name
        return got
    assert value("fwsync_triggers_total", source="docker") == 2
    assert value("fwsync_reconciles_total", result="applied") == 1
    assert value("fwsync_reconciles_total", result="error") == 1
    assert value("fwsync_drift_repairs_total") == 1
    assert value("fwsync_errors_total", kind="rules") == 1
    assert value("fwsync_errors_total", kind="reconcile") == 1
    assert value("fwsync_governed_published_ports") == 3
    assert value("fwsync_rules_valid") == 0
    assert value("fwsync_event_to_enforced_seconds_count") == 1
    assert value("fwsync_reconcile_duration_seconds_count") == 4


def test_log_lines_text_and_json() -> None:
    record = logging.LogRecord("fwsync.daemon", logging.INFO, __file__, 1, "reconcile", (), None)
    record.created = 0.5
    record.fields = outcome().fields()  # type: ignore[attr-defined]
    text = TextFormatter().format(record)
    assert text.startswith("1970-01-01T00:00:00.500Z info reconcile ")
    assert 'trigger="docker: start web-1" result=applied duration_ms=42.0 add=2 remove=1' in text
    assert 'changed="ipv4 chain FWSYNC-INBOUND"' in text
    data = json.loads(JsonFormatter().format(record))
    assert data["msg"] == "reconcile" and data["changed"] == ["ipv4 chain FWSYNC-INBOUND"]
    assert data["add"] == 2 and data["backend"] == "iptables"


def test_outcome_fields_carry_event_latency() -> None:
    fields = outcome(event_received=1000.0, enforced_at=1000.05, event_latency=0.05).fields()
    assert fields["event_latency_ms"] == 50.0 and fields["enforced"] == 1000.05
    assert "event_latency_ms" not in outcome().fields()


def test_trigger_label() -> None:
    assert Trigger(source="signal", reason="SIGHUP", at=0).label() == "signal: SIGHUP"


def test_a_list_file_changes_the_fingerprint_wherever_it_is(tmp_path: Path) -> None:
    from fwsync.rules.load import load_rules

    lists = tmp_path / "elsewhere"
    lists.mkdir()
    (lists / "office.txt").write_text("198.51.100.0/25\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.rules").write_text(f"define office file {lists}/office.txt\n"
                                    "allow from $office to any port 5432\n")
    policy = load_rules(rules).policy
    assert policy is not None and policy.list_files == (f"{lists}/office.txt",)
    used = [Path(f) for f in policy.list_files]
    before = fingerprint(rules, used)
    assert fingerprint(rules) != before, "the list is part of what is fingerprinted"
    (lists / "office.txt").write_text("198.51.100.0/25\n203.0.113.0/25\n")
    assert fingerprint(rules, used) != before


def test_metrics_gauges_from_outcomes() -> None:
    from fwsync.core.enforcing import Enforcement, FamilyReach

    m = Metrics()
    both = Enforcement("nftables", (FamilyReach(4, True, "ok"), FamilyReach(6, True, "ok")))
    m.record(outcome(enforcement=both, in_sync=True, rules_digest="d1", rules_commit="c1"))
    get = m.registry.get_sample_value
    assert get("fwsync_enforcing", {"family": "4"}) == get("fwsync_enforcing",
                                                             {"family": "6"}) == 1
    assert get("fwsync_in_sync") == 1
    assert get("fwsync_rules_info", {"digest": "d1", "commit": "c1"}) == 1
    m.record(outcome(result="error", error="x"))  # the kernel could not be read
    assert get("fwsync_enforcing", {"family": "4"}) == 0 and get("fwsync_in_sync") == 0
    assert get("fwsync_rules_info", {"digest": "d1", "commit": "c1"}) == 1, "no rules read"
    m.record(outcome(enforcement=both, in_sync=True, rules_digest="d2", rules_commit=""))
    assert get("fwsync_rules_info", {"digest": "d1", "commit": "c1"}) is None
    assert get("fwsync_rules_info", {"digest": "d2", "commit": ""}) == 1
