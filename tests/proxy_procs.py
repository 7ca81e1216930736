"""Processes named docker-proxy (a symlink to Python) for the doctor's /proc readers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fwsync.observe.host_facts import PROXY_COMM

# Each says "ready" once started (the interpreter's start-up costs CPU time too).
BUSY = ("import time\nprint('ready', flush=True)\nend = time.monotonic() + 20\n"
        "while time.monotonic() < end: pass\n")
IDLE = "import time; print('ready', flush=True); time.sleep(20)"


def process_named_docker_proxy(tmp_path: Path, code: str, host_port: int
                               ) -> subprocess.Popen[bytes]:
    # comm is the name the program was started by: a symlink called docker-proxy to Python.
    exe = tmp_path / f"{host_port}" / PROXY_COMM
    exe.parent.mkdir()
    exe.symlink_to(sys.executable)
    proc = subprocess.Popen([str(exe), "-c", code, "-proto", "tcp", "-host-ip", "127.0.0.1",
                             "-host-port", str(host_port), "-container-ip", "198.51.100.130",
                             "-container-port", "80"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc
