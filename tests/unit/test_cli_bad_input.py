"""Bad input gets one line on stderr and exit status 1, whatever the command and wherever the
input comes from (arguments, options, files, the environment). Run as `python -m fwsync`, the
way a shell runs it, with commands that never touch the kernel (tests/kernel/test_bad_input.py
runs the ones that would, inside a namespace)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def fwsync(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DOCKER_HOST": f"unix://{tmp}/none.sock",
            "FWSYNC_DOCKER_STATE": str(tmp / "docker.json"), **env}
    return subprocess.run([sys.executable, "-m", "fwsync", *args], capture_output=True,
                          text=True, env=full, cwd=REPO, timeout=60, check=False)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10.rules").write_text("default deny\nallow 80/tcp\n")
    return tmp_path / "rules"


BAD = {
    # explain: int() took Arabic-Indic digits as a port, and raised on '5²' and 5000 digits
    "explain, Arabic-Indic digits": (["explain", "203.0.113.7", "٥٤٣٢"], "HOSTPORT '٥٤٣٢'"),
    "explain, a superscript": (["explain", "203.0.113.7", "5²"], "HOSTPORT '5²'"),
    "explain, 5000 digits": (["explain", "203.0.113.7", "9" * 5000], "the port must be"),
    "explain, a zone": (["explain", "fe80::1%eth0", "80"], "SOURCE 'fe80::1%eth0'"),
    "explain, an escape sequence": (["explain", "\x1b[2J", "80"], "SOURCE '\\\\x1b[2J'"),
    "explain, a huge source": (["explain", "1" * 100_000, "80"], "..."),
    "explain, families mixed": (["explain", "203.0.113.7", "80", "--to", "2001:db8::1"],
                                "different address families"),
    # click's usage errors exited 2, which `plan --detailed-exitcode` answers for changes
    "an unknown option": (["plan", "--detailed-exitcode", "--bogus"], "No such option"),
    "a bad choice": (["plan", "--format", "yaml"], "'yaml' is not one of"),
    "a missing argument": (["explain"], "Missing argument"),
    "a float out of range": (["daemon", "--drift-interval", "0.01"], "0.01 is not in the range"),
    "a doctor check that does not exist": (["doctor", "--ignore", "bogus"], "no check named"),
    "ufw files that are not there": (["import-ufw", "--ufw-dir", "/nonexistent"],
                                     "cannot read /nonexistent/user.rules"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, rules: Path, case: str) -> None:
    args, expected = BAD[case]
    res = fwsync(tmp_path, *args, "--rules", str(rules)) if args[0] in ("explain", "plan") \
        and len(args) > 1 else fwsync(tmp_path, *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert expected in lines[0]
    assert "Traceback" not in res.stdout + res.stderr


def test_files_that_would_hang_or_never_end_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.rules")
    (tmp_path / "ufw").mkdir()
    os.mkfifo(tmp_path / "ufw" / "user.rules")
    res = fwsync(tmp_path, "check", str(tmp_path / "fifo.rules"))
    assert res.returncode == 1
    assert res.stdout == (f"{tmp_path}/fifo.rules:1:1: error: cannot read 'fifo.rules': not a "
                          "regular file (a named pipe)\n")
    res = fwsync(tmp_path, "check", "/dev/zero")
    assert res.returncode == 1 and "not a regular file (a character device)" in res.stdout
    res = fwsync(tmp_path, "import-ufw", "--ufw-dir", str(tmp_path / "ufw"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: cannot read {tmp_path}/ufw/user.rules: not a regular file (a named pipe)"]
