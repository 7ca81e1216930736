"""New-connection load generator, run inside the client namespace by bench_packet.py.

    python -I bench/loadgen.py ADDR PORT --connectors 16 --warmup 0.5 --duration 3

C asyncio connectors each loop: connect, wait for the server's FIN (the server accepts and
closes at once), close. So every counted connection went the whole way (SYN through the
firewall and the DNAT, accept in the server namespace) and the server is the side that closes
first: the client keeps no TIME_WAIT sockets and its ports are reused without a stall.

Only connections that finish inside the measuring window (after the warm-up) are counted. The
answer is one JSON object on stdout: rate, connect-latency percentiles, stalls (connects slower
than 0.5 s, i.e. a lost SYN and its retransmission), errors, and CPU use in the window: the
client's own (getrusage: the kernel's work for its packets, the firewall's included, is charged
to it when it runs in its context), the watched server's and the whole machine's, so a caller
can tell a client-bound run from a firewall-bound one. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import resource
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STALL_SECONDS = 0.5


@dataclass
class Stats:
    window_start: float
    window_end: float
    connects: list[float] = field(default_factory=list)  # connect latency, counted ones only
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0


async def connector(addr: tuple[str, int, int, int] | tuple[str, int], family: int,
                    stats: Stats, max_total: int) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t0 = time.perf_counter()
        if t0 >= stats.window_end or stats.started >= max_total:
            return
        stats.started += 1
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            t1 = time.perf_counter()
            while await loop.sock_recv(sock, 64):  # until the server's FIN
                pass
            t2 = time.perf_counter()
        except OSError as exc:
            stats.errors[errno.errorcode.get(exc.errno or 0, str(exc))] += 1
            await asyncio.sleep(0.01)  # a refused port must not become a busy loop
            continue
        finally:
            sock.close()
        if stats.window_start <= t2 < stats.window_end:
            stats.done += 1
            stats.connects.append(t1 - t0)


def pids_cpu(pids: list[int]) -> float:
    """User + system seconds so far of other processes (the server), from /proc."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    family = socket.AF_INET6 if ":" in args.addr else socket.AF_INET
    addr: tuple[str, int, int, int] | tuple[str, int] = (
        (args.addr, args.port, 0, 0) if family == socket.AF_INET6 else (args.addr, args.port))
    now = time.perf_counter()
    stats = Stats(window_start=now + args.warmup, window_end=now + args.warmup + args.duration)
    tasks = [asyncio.create_task(connector(addr, family, stats, args.max_connections))
             for _ in range(args.connectors)]
    await asyncio.sleep(max(0.0, stats.window_start - time.perf_counter()))
    ru0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    w0, (b0, t0) = pids_cpu(args.watch_pid), machine_jiffies()
    await asyncio.sleep(max(0.0, stats.window_end - time.perf_counter()))
    ru1, c1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    w1, (b1, t1) = pids_cpu(args.watch_pid), machine_jiffies()
    # Connectors stop starting new connections at the window's end; one still waiting for a
    # SYN retransmission is abandoned after a short grace and reported as unfinished.
    _done, pending = await asyncio.wait(tasks, timeout=args.grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "connections": stats.done,
        "seconds": args.duration,
        "rate": stats.done / args.duration,
        "connect_p50_ms": 1000 * percentile(stats.connects, 0.50),
        "connect_p99_ms": 1000 * percentile(stats.connects, 0.99),
        "connect_max_ms": 1000 * max(stats.connects, default=float("nan")),
        "stalls": sum(1 for c in stats.connects if c > STALL_SECONDS),
        "unfinished": len(pending),
        "errors": dict(stats.errors),
        "client_cpu": cpu / (c1 - c0),
        "watched_cpu": (w1 - w0) / (c1 - c0),
        "machine_busy": (b1 - b0) / max(1, t1 - t0),
        "capped": stats.started >= args.max_connections,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--connectors", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--grace", type=float, default=0.2)
    p.add_argument("--max-connections", type=int, default=500_000)
    p.add_argument("--watch-pid", type=int, action="append", default=[],
                   help="also report this process's CPU use in the window (the server)")
    args = p.parse_args(argv)
    if not (0 < args.duration <= 60 and 0 <= args.warmup <= 10 and 1 <= args.connectors <= 256):
        p.error("duration must be in (0, 60] s, warmup in [0, 10] s, connectors in [1, 256]")
    json.dump(asyncio.run(run(args)), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
