"""systemd's notification protocol (sd_notify(3)), spoken directly.

It is one datagram of `KEY=VALUE` lines to the unix socket named by $NOTIFY_SOCKET (a leading
`@` means Linux's abstract namespace). That is a dozen lines; the PyPI package for it
(`sdnotify`) has not been released since 2017 and `systemd-python` needs libsystemd's headers to
build, so neither earns a dependency. Without $NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("fwsync.daemon")


def _address(env: Mapping[str, str]) -> str | None:
    addr = env.get("NOTIFY_SOCKET") or ""
    if not addr or not (addr.startswith("/") or addr.startswith("@")):
        return None  # unset, or a vsock address this daemon does not speak
    return "\0" + addr[1:] if addr.startswith("@") else addr


def sd_notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification; True if it was sent. Never raises: a lost status line must not
    stop a firewall."""
    addr = _address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", addr.lstrip("\0"), exc)
        return False


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec, as systemd advises), or None."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2


def status_line(text: str) -> str:
    """STATUS= takes one line."""
    return "STATUS=" + " ".join(text.split())[:200]
