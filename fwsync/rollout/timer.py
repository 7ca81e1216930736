"""The timer that reverts an unconfirmed apply: it must fire even when the shell that ran
`apply` is gone (an SSH session cut by the very rules being tried).

- Where systemd is PID 1 and fwsync runs in its network namespace: a transient timer unit
  (`systemd-run --on-active`). systemd owns it, not the session: logging out, a killed shell,
  a crashed fwsync leave it running, and its output goes to the journal.
- Otherwise (no systemd, a container, a network namespace of its own, systemd-run failing): a
  process in a session of its own (setsid), its output in a log file beside the pending record.
  Not in the shell's session or process group, it gets neither the terminal's SIGHUP nor a
  `kill` of the group; its parent exiting makes it init's child.

A systemd unit runs in PID 1's network namespace: fwsync running in another one (a network
namespace on a systemd host, as the tests do) would revert the wrong kernel ruleset, so there it
takes the process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

SYSTEMD_DIR = Path("/run/systemd/system")
# Environment the revert must see as `apply` saw it: systemd starts a unit with a clean one.
PASSED_ENV = ("FWSYNC_", "DOCKER_HOST", "PYTHONPATH")


def unit_name(token: str) -> str:
    return f"fwsync-revert-{token}"


def revert_command(token: str, wait_until: float | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "fwsync", "revert-pending", "--token", token]
    if wait_until is not None:
        cmd += ["--wait-until", f"{wait_until:.3f}"]
    return cmd


def systemd_run_command(token: str, seconds: float, env: dict[str, str]) -> list[str]:
    """The transient timer and service. AccuracySec: a timer's default is one minute of
    slack, which would let a 30 s window run to 90 s. --collect: the unit goes away even when
    the revert failed (its log stays in the journal)."""
    cmd = ["systemd-run", "--quiet", "--collect", f"--unit={unit_name(token)}",
           f"--on-active={max(seconds, 0.001):.3f}s", "--timer-property=AccuracySec=100ms",
           f"--description=fwsync: revert the apply unless `fwsync confirm` (token {token})",
           "--property=Type=oneshot"]
    cmd += [f"--setenv={k}={v}" for k, v in sorted(env.items())
            if k.startswith(PASSED_ENV)]
    return [*cmd, "--", *revert_command(token)]


def _same_netns_as_init() -> bool:
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def use_systemd() -> bool:
    """FWSYNC_REVERT_TIMER=process|systemd chooses; otherwise systemd where it is PID 1 and
    this process shares its network namespace."""
    chosen = os.environ.get("FWSYNC_REVERT_TIMER", "").strip()
    if chosen in ("process", "systemd"):
        return chosen == "systemd"
    return SYSTEMD_DIR.is_dir() and _same_netns_as_init()


class TimerError(Exception):
    """The revert could not be timed: the apply must not go ahead."""


def start_timer(token: str, seconds: float, deadline: float, log: Path) -> dict[str, Any]:
    """Start the timer; what stop_timer needs to stop it. Raises TimerError."""
    failed = ""
    if use_systemd():
        cmd = systemd_run_command(token, seconds, dict(os.environ))
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            res, failed = None, str(exc)
        if res is not None and res.returncode == 0:
            return {"kind": "systemd", "unit": f"{unit_name(token)}.timer"}
        failed = failed or (res.stderr.strip() if res is not None else "") or "failed"
    try:
        pid = spawn_detached(revert_command(token, deadline), log)
    except OSError as exc:
        raise TimerError(f"cannot start the revert process: {exc}") from None
    info: dict[str, Any] = {"kind": "process", "pid": pid, "start": start_time(pid),
                            "log": str(log)}
    if failed:
        info["systemd_failed"] = failed
    return info


def spawn_detached(cmd: list[str], log: Path) -> int:
    """Run `cmd` as a daemon process: fork, setsid, fork again (the grandchild is no session
    leader, so it can never get a controlling terminal), stdin from /dev/null, stdout and stderr
    to `log` (never the caller's: a caller that reads them to the end would wait for the
    revert). The middle process exits at once and is reaped here; the grandchild's pid comes
    back through a pipe."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    read_end, write_end = os.pipe()  # close-on-exec, as every fd Python opens (PEP 446)
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked side; its effect is what is tested
        try:
            os.close(read_end)
            os.setsid()
            if grandchild := os.fork():
                os.write(write_end, str(grandchild).encode())
                os._exit(0)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)
    os.close(write_end)
    os.close(out)
    try:
        data = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    if not data:
        raise OSError("the revert process did not start")
    return int(data)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): a pid
    with another start time is another process (pids are reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_revert_process(info: dict[str, Any], token: str) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or start_time(pid) != info.get("start"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"revert-pending" in cmdline and token.encode() in cmdline


def stop_timer(info: dict[str, Any], token: str) -> str | None:
    """Stop it; a message when it could not be (the revert then finds nothing to do: the
    pending record is gone)."""
    if info.get("kind") == "systemd":
        try:
            res = subprocess.run(["systemctl", "stop", str(info["unit"])], capture_output=True,
                                 text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot stop {info['unit']}: {exc}"
        return None if res.returncode == 0 else \
            f"cannot stop {info['unit']}: {res.stderr.strip()}"
    if info.get("kind") == "process" and is_revert_process(info, token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(info["pid"]), signal.SIGTERM)
    return None
