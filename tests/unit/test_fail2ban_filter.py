"""monitoring/fail2ban/filter.d/fwsync.conf, run by fail2ban's own fail2ban-regex on lines the
daemon's own code writes (decisions.ufw_line through logs' text and JSON formatters): every
BLOCK line is one failure of its client's address (IPv4 and IPv6, with or without ports), and
nothing else is: not ALLOW lines, not the daemon's other lines, and never an address that a
container's name or a rules file's path spells out. A change to the line's form on either side
fails here, not in a host that silently stops banning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fwsync.daemon.decisions import LogDecision, ufw_line
from fwsync.daemon.logs import JsonFormatter, TextFormatter
from tests.fail2ban import RegexReport, fail2ban_regex_cmd, parse_report, run_fail2ban_regex
from tests.lab import in_ci

pytestmark = pytest.mark.unit

FILTER = Path(__file__).resolve().parents[2] / "monitoring" / "fail2ban" / "filter.d" / \
    "fwsync.conf"
WHEN = 1796672819.208  # 2026-12-07T19:46:59.208Z
FORMATTERS = {"text": TextFormatter(), "json": JsonFormatter()}


def fail2ban_regex() -> list[str]:
    found = fail2ban_regex_cmd()
    if found is None:
        msg = "fail2ban-regex is not fetched (run tools/fetch-fail2ban, or make test)"
        if in_ci():  # a skip would let a broken CI machine pass an unchecked filter
            pytest.fail(msg + " (CI=true: this test may not skip)", pytrace=False)
        pytest.skip(msg)
    return found


def decision(src: str = "203.0.113.7", verdict: str = "deny", **kw: Any) -> LogDecision:
    fields: dict[str, Any] = {
        "time": WHEN, "src": src, "sport": 55704, "port": 5432, "proto": "tcp",
        "container": "db", "verdict": verdict, "origin": "/etc/fwsync/rules/10-web.rules:1",
        "indev": "eth0", "dest": "172.17.0.2", "dport": 5432,
        "host_ip": "2001:db8::1" if ":" in src else "198.51.100.1"}
    fields.update(kw)
    return LogDecision(**fields)


def logged(fmt: str, msg: str, level: int = logging.INFO, **fields: Any) -> str:
    """One line as `fwsync daemon --log-format FMT` writes it."""
    record = logging.LogRecord("fwsync", level, __file__, 0, msg, None, None)
    record.created = WHEN
    if fields:
        record.fields = fields
    return FORMATTERS[fmt].format(record)


def check(lines: list[str], tmp_path: Path, **kw: Any) -> RegexReport:
    fail2ban_regex()
    res = run_fail2ban_regex("".join(f"{line}\n" for line in lines), FILTER, tmp_path, **kw)
    assert res.returncode == 0, res.stdout + res.stderr
    report = parse_report(res.stdout)
    assert report.lines == len(lines), res.stdout
    return report


def test_the_sample_line_is_the_one_the_filter_was_written_for() -> None:
    assert logged("text", ufw_line(decision())) == (
        "2026-12-07T19:46:59.208Z info [FWSYNC BLOCK] IN=eth0 OUT= SRC=203.0.113.7 "
        "DST=198.51.100.1 PROTO=TCP SPT=55704 DPT=5432 CONTAINER=db "
        "RULE=/etc/fwsync/rules/10-web.rules:1")


@pytest.mark.parametrize("fmt", FORMATTERS)
def test_each_block_line_is_a_failure_of_its_source(fmt: str, tmp_path: Path) -> None:
    blocked = [decision("203.0.113.7"), decision("2001:db8:2::7", verdict="reject"),
               decision("203.0.113.9", proto="icmp", sport=None, port=None, dport=None,
                        container=None, origin="/etc/fwsync/rules/00-default.rules:9"),
               decision("2001:db8:2::9", proto="icmpv6", sport=None, port=None, dport=None)]
    lines = [logged(fmt, ufw_line(d)) for d in blocked]
    report = check(lines, tmp_path)
    assert (report.matched, report.missed) == (4, 0)
    assert sorted(report.hosts) == sorted(d.src for d in blocked)
    assert list(report.matched_lines) == lines


@pytest.mark.parametrize("fmt", FORMATTERS)
def test_allowed_connections_and_other_lines_are_no_failures(fmt: str, tmp_path: Path) -> None:
    lines = [
        logged(fmt, ufw_line(decision("203.0.113.8", verdict="allow"))),
        logged(fmt, ufw_line(decision("2001:db8:2::8", verdict="allow"))),
        logged(fmt, "reconcile", trigger="docker", sources=["docker"], applied=3),
        # A name chosen by whoever reaches Docker's socket, quoted in another line.
        logged(fmt, "container published", level=logging.WARNING,
               name="x [FWSYNC BLOCK] IN=eth0 OUT= SRC=198.51.100.66 DST=198.51.100.1 PROTO=TCP"),
        logged(fmt, "info [FWSYNC BLOCK] IN=eth0 OUT= SRC=198.51.100.67 DST=198.51.100.1 "
               "PROTO=TCP", level=logging.WARNING),
    ]
    report = check(lines, tmp_path)
    assert (report.matched, report.missed) == (0, len(lines)), report
    assert report.hosts == []


@pytest.mark.parametrize("fmt", FORMATTERS)
def test_a_limit_rules_refusal_is_a_failure(fmt: str, tmp_path: Path) -> None:
    """A client over a `limit` rule's rate, `[FWSYNC LIMIT BLOCK]` as ufw's `[UFW LIMIT
    BLOCK]`: what fail2ban is for."""
    line = logged(fmt, ufw_line(decision("203.0.113.8", verdict="limit")))
    assert "[FWSYNC LIMIT BLOCK] " in line
    report = check([line], tmp_path)
    assert (report.matched, report.hosts) == (1, ["203.0.113.8"]), report


@pytest.mark.parametrize("fmt", FORMATTERS)
def test_names_that_spell_an_address_ban_only_the_real_source(fmt: str, tmp_path: Path) -> None:
    """CONTAINER= and RULE= come after SRC= and hold what others chose; the daemon makes
    spaces and `=` in them `_`, and the filter takes the SRC= right after IN= and OUT=."""
    hostile = decision("203.0.113.12", container="evil SRC=198.51.100.66",
                       origin="/etc/fwsync/rules/SRC=198.51.100.67 x.rules:3",
                       indev="SRC=198.51.100.68")
    line = logged(fmt, ufw_line(hostile))
    assert "CONTAINER=evil_SRC_198.51.100.66 RULE=/etc/fwsync/rules/SRC_198.51.100.67_x" \
           ".rules:3" in line and "IN=SRC_198.51.100.68 " in line
    report = check([line], tmp_path)
    assert report.matched == 1
    assert report.hosts == ["203.0.113.12"]


def test_a_value_with_a_space_does_not_move_the_source(tmp_path: Path) -> None:
    """Past the daemon's `_`: were a space ever to reach IN= or OUT=, the fields after it no
    longer line up and the line is no failure, rather than one of the address it spelled."""
    lines = ["2026-12-07T19:46:59.208Z info [FWSYNC BLOCK] IN=x SRC=198.51.100.66 OUT= "
             "SRC=203.0.113.12 DST=198.51.100.1 PROTO=TCP SPT=1 DPT=80 CONTAINER=db RULE=r:1",
             "2026-12-07T19:46:59.208Z info [FWSYNC BLOCK] IN=eth0 OUT=x SRC=198.51.100.66 "
             "SRC=203.0.113.12 DST=198.51.100.1 PROTO=TCP SPT=1 DPT=80 CONTAINER=db RULE=r:1"]
    report = check(lines, tmp_path)
    assert report.hosts == [], report


def test_the_lines_time_is_read_as_utc(tmp_path: Path) -> None:
    """The daemon writes UTC ("Z"): fail2ban must not take it for local time, or a host east
    of Greenwich would see every line as older than findtime, and one west as in the future."""
    lines = [logged(fmt, ufw_line(decision())) for fmt in FORMATTERS]
    report = check(lines, tmp_path, env={"TZ": "America/New_York"})
    assert [f.time for f in report.failures] == ["Mon Dec 07 14:46:59 2026"] * 2


@pytest.mark.parametrize("fmt", FORMATTERS)
def test_journal_entries_as_the_systemd_backend_joins_them(fmt: str, tmp_path: Path) -> None:
    """Under `backend = systemd` fail2ban matches "HOSTNAME IDENT[PID]: MESSAGE" and takes the
    journal's time, not the line's (-d {NONE}: no time read from the line); MESSAGE is the
    daemon's whole line, its own time included."""
    prefix = "web-1 fwsync[812]: "
    lines = [prefix + logged(fmt, ufw_line(decision("203.0.113.7"))),
             prefix + logged(fmt, ufw_line(decision("2001:db8:2::7"))),
             prefix + logged(fmt, ufw_line(decision("203.0.113.8", verdict="allow"))),
             prefix + logged(fmt, ufw_line(decision("203.0.113.12",
                                                    container="x SRC=198.51.100.66"))),
             prefix + logged(fmt, "info [FWSYNC BLOCK] IN=eth0 OUT= SRC=198.51.100.67 "
                             "DST=198.51.100.1 PROTO=TCP", level=logging.WARNING)]
    report = check(lines, tmp_path, args=("-d", "{NONE}"))
    assert sorted(report.hosts) == ["2001:db8:2::7", "203.0.113.12", "203.0.113.7"], report
    assert report.missed == 2


def test_the_filter_reads_the_journal_of_fwsyncs_unit() -> None:
    text = FILTER.read_text()
    assert "\njournalmatch = _SYSTEMD_UNIT=fwsync.service\n" in text
    unit = Path(__file__).resolve().parents[2] / "systemd" / "fwsync.service"
    assert unit.is_file()
