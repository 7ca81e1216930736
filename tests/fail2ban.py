"""Where tools/fetch-fail2ban keeps fail2ban-regex (fail2ban's filter checker, from Debian's
`fail2ban` package, which is not installed) and how the tests run it and read its report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "fail2ban"
SUITE = "bookworm"
# What fail2ban-regex needs out of the package: the script; the Python package it imports
# (pure Python on python3 alone: pyinotify and python3-systemd are optional backends it
# imports only when asked to read with them; its own tests/ stay in the .deb); etc/fail2ban,
# the filter.d/common.conf and the other files a filter's `before =` may name.
SCRIPT = "usr/bin/fail2ban-regex"
LIBDIR = "usr/lib/python3/dist-packages"
MEMBERS = (SCRIPT, f"{LIBDIR}/fail2ban/", "etc/fail2ban/")
LEFT_OUT = (f"{LIBDIR}/fail2ban/tests/",)
STAMP = "VERSIONS"  # written last by tools/fetch-fail2ban: its presence means complete


def fail2ban_dir() -> Path:
    return Path(os.environ.get("FWSYNC_FAIL2BAN_DIR") or "/var/cache/fwsync-fail2ban")


def fetched() -> Path | None:
    """The folder tools/fetch-fail2ban filled, when it is complete."""
    folder = fail2ban_dir()
    return folder if (folder / STAMP).is_file() and (folder / SCRIPT).is_file() else None


def fetched_cmd(folder: Path) -> list[str]:
    """fail2ban-regex unpacked in `folder`: the script under this interpreter, with the
    unpacked package on PYTHONPATH (the machine's python3 has no fail2ban of its own)."""
    return ["/usr/bin/env", f"PYTHONPATH={folder / LIBDIR}", sys.executable,
            str(folder / SCRIPT)]


def fail2ban_regex_cmd() -> list[str] | None:
    """The fetched fail2ban-regex, else one on PATH (a machine with fail2ban installed)."""
    folder = fetched()
    if folder is not None:
        return fetched_cmd(folder)
    on_path = shutil.which("fail2ban-regex")
    return [on_path] if on_path else None


def run_fail2ban_regex(log_text: str, filter_path: Path, tmp: Path, *,
                       args: Sequence[str] = (), env: Mapping[str, str] | None = None
                       ) -> subprocess.CompletedProcess[str]:
    """fail2ban-regex on `log_text` (written to a file in `tmp`) with the filter file
    `filter_path`, as a file backend reads it (the filter's datepattern takes each line's
    time). --raw: no DNS; -v: each failure's host and time under its failregex;
    --print-all-matched: the matched lines. `args` come before the file (e.g. `-d {NONE}`:
    no date in the line, as under the systemd backend); `env` is added to this process'."""
    cmd = fail2ban_regex_cmd()
    if cmd is None:
        raise FileNotFoundError("fail2ban-regex is not fetched (run tools/fetch-fail2ban)")
    log = tmp / "fail2ban-input.log"
    log.write_text(log_text, encoding="utf-8")
    return subprocess.run([*cmd, "--raw", "-v", "--print-all-matched", *args, str(log),
                           str(filter_path)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "LC_ALL": "C.UTF-8", **(env or {})})


@dataclass(frozen=True, slots=True)
class Failure:
    host: str  # the filter's <HOST>/<ADDR>, as fail2ban would ban it
    time: str  # as fail2ban-regex -v prints it (its process' local time, ctime's form)


@dataclass(frozen=True, slots=True)
class RegexReport:
    lines: int  # lines read
    ignored: int  # lines an ignoreregex matched
    matched: int  # lines a failregex matched
    missed: int
    failures: tuple[Failure, ...]  # grouped by failregex, in line order within each
    matched_lines: tuple[str, ...]  # as --print-all-matched shows them, in line order

    @property
    def hosts(self) -> list[str]:
        return [f.host for f in self.failures]


_SUMMARY = re.compile(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", re.M)
# -v, under `Failregex: N total`: `|   1) [HITS] REGEX`, then `|      HOST  CTIME` per failure.
_FAILURE = re.compile(r"^\|\s{6}(\S+)\s{2}(.+?)\s*$", re.M)
_SHOWN = re.compile(r"^\|\s{2}(.*)$", re.M)  # a line of the `Matched line(s):` list


def parse_report(out: str) -> RegexReport:
    """fail2ban-regex's report (stdout of run_fail2ban_regex) as counts, failures and the
    matched lines; ValueError when it has no `Lines:` summary (the run failed)."""
    m = _SUMMARY.search(out)
    if m is None:
        raise ValueError(f"no `Lines:` summary in fail2ban-regex's output:\n{out}")
    lines, ignored, matched, missed = (int(g) for g in m.groups())
    regexes = out.partition("\nFailregex:")[2].partition("\nIgnoreregex:")[0]
    failures = tuple(Failure(h, t) for h, t in _FAILURE.findall(regexes))
    shown = out[m.end():].partition("|- Matched line(s):\n")[2].partition("\n`-")[0]
    return RegexReport(lines, ignored, matched, missed, failures,
                       tuple(_SHOWN.findall(shown)))
