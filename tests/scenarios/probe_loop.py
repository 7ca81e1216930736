"""Probes run on a client (a namespace of the test bed, or the trusted/attacker VM). Standard
library only: the VMs have Debian's python3 and nothing else. Two modes:

    probe_loop.py once '[[ADDR, PORT], ...]' TIMEOUT   -> one JSON list of states, in order
    probe_loop.py loop ADDR PORT INTERVAL              -> one JSON line per attempt until SIGTERM

A TCP connect: connected = open, refused or an ICMP error = closed, timeout = filtered.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ANSWERED = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}


def probe(addr: str, port: int, timeout: float) -> str:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            return "open"
        except TimeoutError:
            return "filtered"
        except OSError as e:
            # No route or no address yet (the network coming up) is not a firewall verdict.
            return "closed" if e.errno in ANSWERED else f"error:{errno.errorcode.get(e.errno or 0)}"


def once(targets: list[list[object]], timeout: float) -> None:
    with ThreadPoolExecutor(max(1, len(targets))) as pool:
        states = list(pool.map(lambda t: probe(str(t[0]), int(str(t[1])), timeout), targets))
    print(json.dumps(states))


def loop(addr: str, port: int, interval: float) -> None:
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    while not stop:
        start = time.monotonic()
        state = probe(addr, port, 1.0)
        print(json.dumps([round(start - t0, 2), state]), flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - start)))


if __name__ == "__main__":
    if sys.argv[1] == "once":
        once(json.loads(sys.argv[2]), float(sys.argv[3]))
    else:
        loop(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
