"""The replay harness of the nftables atomicity test: inside a lab's HOST namespace, fwsync's
own nftables backend replaces its table as fast as it can, alternating between two policies
whose office set is new at every switch (sets are named by their content), while the office
connects in a tight loop. A connection the office loses is a packet that met a half-published
ruleset.

Why it looks like this: with a new set created in the same transaction as the rules that use
it, the kernel made the new rules visible before it had published the set's elements, and about
one connection in 10k was lost. A set of a few hundred elements takes longer to publish than a
one-element set, which widens that moment: the harness uses such sets so that a regression
shows up within seconds rather than once in many runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# Runs in HOST: render → read → diff → apply through NftablesBackend, the code `fwsync apply`
# runs, without a process start per replacement (~25 ms each instead of ~300 ms).
_REPLAY = r"""
import json, sys, time
from fwsync.backends.nftables import NftablesBackend
from fwsync.core.build import build_ruleset
from fwsync.core.diff import diff
from fwsync.core.observed import DockerState
from fwsync.rules.syntax import parse_sources

texts, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
rulesets = []
for i, text in enumerate(texts):
    parsed = parse_sources([(f"policy-{i}.rules", text)], lambda _p: "")
    assert parsed.ok and parsed.policy is not None, parsed.diagnostics
    rulesets.append(build_ruleset(parsed.policy, DockerState()).ruleset)
backend = NftablesBackend()
print("ready", flush=True)
sys.stdin.readline()  # go
deadline, done = time.monotonic() + seconds, 0
while time.monotonic() < deadline:
    desired = backend.render(rulesets[done % len(rulesets)])
    backend.apply(diff(backend.name, desired, backend.read()))
    done += 1
print(json.dumps({"replacements": done}), flush=True)
"""


def office_policy(parity: int, fillers: int = 120) -> str:
    """The office (198.51.100.0/25) and `fillers` single addresses that are never adjacent
    (so the interval set keeps them as elements of their own), every other one from
    198.51.100.128/25 and 203.0.113.128/25 by `parity`: a new set at every switch."""
    hosts = [f"198.51.100.{128 + 2 * i + parity}" for i in range(64)] + \
        [f"203.0.113.{128 + 2 * i + parity}" for i in range(64)]
    members = ", ".join(["198.51.100.0/25", *hosts[:fillers]])
    return ("default deny\n"
            f"define office {members}\n"
            "allow from $office to any port 5432 proto tcp\n")


class Replay:
    """The replaying process in `ns` (a Netns); `start()` lets it go, `result()` waits."""

    def __init__(self, ns: Any, policies: list[str], seconds: float) -> None:
        self.proc = subprocess.Popen(
            [*ns.nsenter_prefix(), sys.executable, "-c", _REPLAY, json.dumps(policies),
             str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 120) -> int:
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the replay failed ({self.proc.returncode}): {out}")
        return int(json.loads(out.strip().splitlines()[-1])["replacements"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
