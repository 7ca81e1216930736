"""Steps shared by the kernel and e2e tests that drive fwsync itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lab import run_fwsync

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"


def write_rules(tmp_path: Path, text: str, name: str = "10-test.rules") -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / name).write_text(text)
    return rules


def office_and_attacker(lab: Any, port: int) -> dict[str, str]:
    """What the attacker and the office (the trusted peer) see of PORT, over IPv4 and IPv6."""
    return {f"{who} v{6 if v6 else 4}": peer.probe(port, v6=v6)
            for who, peer in (("attacker", lab.attacker), ("office", lab.trusted))
            for v6 in (False, True)}


# The seed's promise on both families: the office in, nobody else.
OFFICE_ONLY = {"attacker v4": "filtered", "attacker v6": "filtered",
               "office v4": "open", "office v6": "open"}


def fwsync_ok(lab: Any, *args: str, rules: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = run_fwsync(lab, *args, rules=rules, env=env)
    assert res.returncode == 0, (
        f"fwsync {' '.join(args)} exited {res.returncode}\n{res.stderr}{res.stdout}")
    return res


_HAMMER = r"""
import asyncio, json, socket, sys, time
addr, port, seconds, workers = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
counts = {"open": 0, "closed": 0, "filtered": 0}
ports = iter(range(10000, 65000))
async def worker(deadline):
    while time.monotonic() < deadline:
        # Each connection gets a source port never used before in this run: a SYN that reuses a
        # 4-tuple still in TIME_WAIT (server or conntrack) can stall 1 s and pass for a drop.
        local = next(ports, None)
        if local is None:
            break
        try:
            _, w = await asyncio.wait_for(
                asyncio.open_connection(addr, port, local_addr=("0.0.0.0", local)), 1.0)
            w.close()
            counts["open"] += 1
        except (asyncio.TimeoutError, TimeoutError):
            counts["filtered"] += 1
        except OSError:
            counts["closed"] += 1
        await asyncio.sleep(0.002)  # paced, so a run stays within the 55k source ports
async def main():
    deadline = time.monotonic() + seconds
    print("ready", flush=True)
    await asyncio.gather(*(worker(deadline) for _ in range(workers)))
asyncio.run(main())
print(json.dumps(counts), flush=True)
"""


class Hammer:
    """A client that connects in a tight loop from a namespace, counting every verdict."""

    def __init__(self, ns: Any, addr: str, port: int, seconds: float, workers: int = 4) -> None:
        self.proc = subprocess.Popen(
            [*ns.nsenter_prefix(), sys.executable, "-I", "-c", _HAMMER, addr, str(port),
             str(seconds), str(workers)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def result(self, timeout: float = 60) -> dict[str, int]:
        out, _ = self.proc.communicate(timeout=timeout)
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
