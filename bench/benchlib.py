"""What bench_apply.py and bench_packet.py share: the allowlists, the rules files, running fwsync
in a lab and timing it, statistics, markdown tables, clean exits on signals.

The allowlists are IPv6: N non-overlapping entries that neither fwsync (collapse_addresses) nor
nftables (interval merging) can merge into fewer, as a real allowlist of unrelated hosts. Such a
list of 100k entries does not fit in the IPv4 documentation and benchmark ranges (at most every
other address of 198.18.0.0/15 can be used: 65,536), while 2001:db8::/32 has room for any N.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.lab import (  # noqa: E402
    TRUSTED_V6,
    KernelLab,
    LabError,
    netns_names,
    run_fwsync,
)

BENCH = Path(__file__).resolve().parent
BACKENDS = ("iptables", "nftables")
PORT = 5432  # the published host port the rules allow
Variant = Literal["set", "linear"]

# Allowlist entries: nine in ten are /128 hosts, one in ten a /64 network (two prefix lengths,
# as in a real list), every one two steps from the next so that none can be merged.
_HOSTS = int(ipaddress.IPv6Address("2001:db8:8000::"))
_NETS = int(ipaddress.IPv6Address("2001:db8:c000::")) >> 64
# The replacement for one entry on re-apply: odd, so it is none of the generated hosts.
CHANGED_ENTRY = "2001:db8:8000::1:0:0:1"
CLIENT = TRUSTED_V6  # the load generator's address, the last entry of every list


def allowlist(n: int) -> list[str]:
    """N entries; the client's own address is the last one (the worst case for linear rules)."""
    if n < 1:
        raise ValueError("an allowlist needs at least the client's entry")
    entries = []
    for i in range(n - 1):
        if i % 10 == 9:
            entries.append(f"{ipaddress.IPv6Address((_NETS + 2 * i) << 64)}/64")
        else:
            entries.append(str(ipaddress.IPv6Address(_HOSTS + 2 * i)))
    return [*entries, CLIENT]


def with_one_changed(entries: Sequence[str]) -> list[str]:
    """The same list with one entry (in the middle, never the client's) replaced."""
    changed = list(entries)
    index = (len(changed) - 1) // 2 if len(changed) > 1 else 0
    if changed[index] == CLIENT:  # a list of one: add instead of replacing the client
        return [*changed, CHANGED_ENTRY]
    changed[index] = CHANGED_ENTRY
    return changed


def write_rules(directory: Path, variant: Variant, entries: Sequence[str]) -> Path:
    """A rules directory: `define big file big.txt` + one rule, or one rule per entry."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    head = "# fwsync benchmark, generated\ndefault deny incoming\n"
    if variant == "set":
        (directory / "big.txt").write_text("\n".join(entries) + "\n")
        body = f"define big file big.txt\nallow from $big to any port {PORT} proto tcp\n"
    else:
        body = "".join(f"allow from {e} to any port {PORT}\n" for e in entries)
    (directory / "10-bench.rules").write_text(head + body)
    return directory


# --------------------------------------------------------------------------- running fwsync


@dataclass(frozen=True)
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + system CPU seconds of the process and the processes it ran

    @property
    def unavailable(self) -> bool:
        """The backend is not built in this version (exit 1, "... not available ...")."""
        return self.returncode == 1 and "not available" in self.stderr

    def tail(self, chars: int = 600) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-chars:]


def fwsync(lab: KernelLab, *args: str, rules: Path | None = None,
           timeout: float = 900) -> Timed:
    """`fwsync ARGS` inside the lab's HOST, timed as a user would time it (interpreter start-up
    included)."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    res = run_fwsync(lab, *args, rules=rules, timeout=timeout)
    return Timed(time.perf_counter() - t0, res.returncode, res.stdout, res.stderr,
                 children_cpu() - cpu0)


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (and theirs): a whole command's CPU when
    taken before and after it. Moves much less than wall time on a shared machine."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def new_lab(stack: contextlib.ExitStack) -> KernelLab:
    """A Docker-like host (Docker 20.10's rules, no dockerd) publishing host port 5432 on the
    fake container's port 80, over IPv4 and IPv6; removed when the stack closes."""
    lab = stack.enter_context(KernelLab())
    lab.publish(PORT, 80)
    return lab


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))


def fmt_seconds(s: Spread | None) -> str:
    if s is None:
        return "—"
    if s.n == 1:
        return f"{s.median:.3f} s (1 run)"
    return f"{s.median:.3f} s ({s.low:.3f}-{s.high:.3f})"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def parse_sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        mult = 1000 if part.endswith("k") else 1
        out.append(int(part.rstrip("k")) * mult)
    if any(n < 1 or n > 200_000 for n in out):
        raise ValueError("sizes must be between 1 and 200k")
    return out


# --------------------------------------------------------------------------- the machine


def prepare_python() -> None:
    """Time fwsync as an installed package runs: with its bytecode compiled (pip and pipx
    compile at install). A checkout run with PYTHONDONTWRITEBYTECODE set (some shells and CI
    images set it) would compile every module from source on every start (~30 ms)."""
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(REPO / "fwsync"), quiet=1)


def loadavg() -> str:
    """The 1-minute load average now (the machine is shared: every figure says how busy)."""
    return Path("/proc/loadavg").read_text().split()[0]


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "fwsync"],
                           capture_output=True, text=True, check=False).stdout.strip()
    versions = {}
    for tool in ("iptables", "nft", "ipset"):
        res = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        versions[tool] = (res.stdout or res.stderr).strip().splitlines()[0] if (
            res.stdout or res.stderr) else "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "fwsync_commit": head + (" + uncommitted changes in fwsync/" if dirty else ""),
        **versions,
    }


# --------------------------------------------------------------------------- clean exits


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT (even where a shell made it ignored), SIGTERM and SIGHUP unwind like Ctrl-C, so
    every `with` block's cleanup runs."""
    old = {s: signal.signal(s, _raise_interrupt) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def interruptible(main: Callable[[], int]) -> int:
    """Run a benchmark's main; Ctrl-C, SIGTERM or SIGHUP end it after its cleanup ran."""
    try:
        with signals_interrupt():
            return main()
    except KeyboardInterrupt as exc:
        left = leftover_namespaces()
        print(f"\ninterrupted ({exc or 'Ctrl-C'}): "
              + (f"left behind: {', '.join(left)}" if left else "everything it made is removed"),
              file=sys.stderr)
        return 130


def leftover_namespaces() -> list[str]:
    """This process's lab namespaces that still exist (there should be none after cleanup)."""
    prefix = f"fws-{os.getpid()}-"
    return [n for n in netns_names() if n.startswith(prefix)]


def close_all(stack: contextlib.ExitStack) -> list[str]:
    """Run the stack's cleanups, not to be cut short by a second Ctrl-C (it is honoured once
    they are done); return the problems instead of hiding the original error."""
    arrived: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: arrived.append(signum))
           for s in _SIGNALS}
    problems: list[str] = []
    try:
        stack.close()
    except LabError as exc:
        problems.append(str(exc))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if arrived:
        raise KeyboardInterrupt(f"signal {arrived[0]} during cleanup")
    return problems


def dump_json(path: str | None, data: Mapping[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=str) + "\n")
