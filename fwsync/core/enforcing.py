"""Is fwsync enforcing? The one predicate, from the kernel's state. Pure.

Enforcing means, per address family: a new connection from outside to a published port reaches
fwsync's first rule before anything else can accept it. `status`, `plan` (as drift), the daemon
(drift) and `doctor` all ask this module; none of them decides it on its own.

- iptables: FORWARD is walked from the top. A rule that cannot accept (DROP, REJECT, LOG, ...)
  is passed; fwsync's own jump, or an unconditional `-j DOCKER-USER` whose walk reaches fwsync's
  jump, means reached; someone's conditional `-j` to fwsync's own chain is passed (fwsync's
  rules judge what it sends, the rest comes back); anything else that could let the packet on
  (ACCEPT, RETURN, a jump to another chain, a conditional jump to DOCKER-USER) comes first, and
  the answer is no. An
  ACCEPT is final within the table, so whatever accepts before fwsync's jump bypasses it.
  INPUT is walked the same way for fwsync's jump to its INPUT-path chain (the ports
  docker-proxy serves: IPv6 to a container without IPv6): both paths must be reached.
- nftables: an `accept` only ends one base chain, so another table cannot let a packet past
  fwsync's; what matters is that fwsync's base chains are registered on the forward and input
  hooks before the filter priority (0) at which Docker's chains, iptables and ufw run, and that
  the forward one sends packets on to fwsync's rules. The same holds between iptables-nft and
  iptables-legacy: each is a hook of its own, and an ACCEPT in one does not skip the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fwsync.core.audit import audit_problem
from fwsync.core.ruleset import Family

FWSYNC_ENTRY = "FWSYNC-FORWARD"
FWSYNC_RULES = "FWSYNC-INBOUND"
FWSYNC_INPUT = "FWSYNC-INPUT"
DOCKER_USER = "DOCKER-USER"
# Targets that never let a packet on to a later rule's ACCEPT: final refusals, and those that
# only look or mark and then continue with the next rule.
_PASSIVE = {"DROP", "REJECT", "LOG", "NFLOG", "MARK", "CONNMARK", "TRACE", "AUDIT", "CT",
            "NOTRACK", "CLASSIFY", "DSCP", "TCPMSS", "TOS", "TTL", "HL", "SET"}
_TARGET = re.compile(r"(?:^| )-[jg] (\S+)")
FILTER_PRIORITY = 0  # Docker's nftables chains and both iptables variants' filter FORWARD


@dataclass(frozen=True)
class FamilyReach:
    family: Family
    reached: bool
    why: str  # the path when reached; what comes first (or is missing) when not


NOTHING_HELD = "fwsync holds nothing in the kernel: no rule of its own is there to enforce"


@dataclass(frozen=True)
class Enforcement:
    backend: str
    families: tuple[FamilyReach, ...]
    # Whether fwsync has any object in the kernel (Backend.holds): with none, nothing of its
    # is enforced, whatever the chains around it say.
    held: bool = True
    # Where fwsync's objects, as the kernel lists them, give another verdict than the policy
    # (fwsync.verify: one line each, e.g. "203.0.113.7 → 0.0.0.0:5432/tcp db: policy deny,
    # kernel allow"). Reached rules that say something else are not the policy enforced.
    disagreements: tuple[str, ...] = ()
    # Whether the kernel holds the INPUT path's catch-all, reached from fwsync's input chain:
    # a rule on a cgroup that still exists (nftables' `socket cgroupv2`, listed by its path).
    # Without it, a port docker-proxy serves from after the apply is not judged on that path.
    proxy_catchall: bool = False
    # Audited rules the kernel holds (core/audit: "FILE:LINE would deny"): they refuse nothing,
    # so the policy is not enforced where they stand.
    audited: tuple[str, ...] = ()

    @property
    def reached(self) -> bool:
        """fwsync's rules come first in every family (whatever they say)."""
        return self.held and bool(self.families) and all(f.reached for f in self.families)

    @property
    def enforcing(self) -> bool:
        return bool(self.families) and all(self.enforcing_in(f.family) for f in self.families)

    def enforcing_in(self, family: Family) -> bool:
        """`enforcing`, for one family (the daemon's fwsync_enforcing{family}). A disagreement
        counts against both: the verifier's lines are kept as text, without their family."""
        mine = [f for f in self.families if f.family == family]
        return self.held and not self.disagreements and not self.audited and bool(mine) \
            and all(f.reached for f in mine)

    @property
    def problems(self) -> tuple[str, ...]:
        if not self.held:
            return (NOTHING_HELD,)
        reach = tuple(f"IPv{f.family}: {f.why}" for f in self.families if not f.reached)
        audit = (audit_problem(self.audited),) if self.audited else ()
        return reach + audit + disagreement_problems(self.disagreements)

    def summary(self) -> str:
        if self.enforcing:
            return "; ".join(f"IPv{f.family}: {f.why}" for f in self.families)
        return "; ".join(self.problems)


SHOWN_DISAGREEMENTS = 3  # a problem line names the first few; JSON and logs carry them all


def disagreement_problems(disagreements: Sequence[str]) -> tuple[str, ...]:
    """One problem line for the kernel's disagreements with the policy, if any."""
    if not disagreements:
        return ()
    shown = "; ".join(disagreements[:SHOWN_DISAGREEMENTS])
    more = len(disagreements) - SHOWN_DISAGREEMENTS
    return (f"the kernel's rules give other verdicts than the policy: {shown}"
            + (f" (and {more} more)" if more > 0 else ""),)


def nothing_held(backend: str) -> Enforcement:
    """The answer when the backend holds none of fwsync's objects."""
    return Enforcement(backend, (), held=False)


def _target(line: str) -> str | None:
    m = _TARGET.search(line)
    return m.group(1) if m else None


def _unconditional(line: str, chain: str, target: str) -> bool:
    return line == f"-A {chain} -j {target}"


def _walk(chain: str, chains: Mapping[str, Sequence[str]], path: str,
          entry: str = FWSYNC_ENTRY) -> tuple[bool | None, str]:
    """(True, path): fwsync's jump reached; (False, why): something may accept first;
    (None, ""): the chain ended without deciding (the walk goes on in the calling chain)."""
    for pos, line in enumerate(chains.get(chain, ()), start=1):
        here = f"{path}{chain} rule {pos}"
        target = _target(line)
        if _unconditional(line, chain, entry):
            return True, f"{here} → {entry}"
        if target is None or target in _PASSIVE:
            continue
        if line.endswith(f" -j {entry}"):
            # Someone's conditional jump to fwsync's own chain: what it sends there is judged
            # by fwsync's rules, and what they leave comes back here, on to fwsync's own jump.
            continue
        if chain == "FORWARD" and _unconditional(line, chain, DOCKER_USER):
            found, why = _walk(DOCKER_USER, chains, f"{here} → ")
            if found is not None:
                return found, why
            continue  # DOCKER-USER returned without a verdict: on with FORWARD
        return False, f"`{line}` ({here}) comes before fwsync's jump and may accept"
    return None, ""


def iptables_reach(family: Family, chains: Mapping[str, Sequence[str]]) -> FamilyReach:
    """`chains`: the filter table of the variant fwsync writes, chain → its `-A` lines in
    order (as iptables-save lists them)."""
    if FWSYNC_ENTRY not in chains or FWSYNC_RULES not in chains:
        return FamilyReach(family, False, "fwsync's chains are missing")
    if not any(_target(line) == FWSYNC_RULES for line in chains[FWSYNC_ENTRY]) \
            or not chains[FWSYNC_RULES]:
        return FamilyReach(family, False, f"{FWSYNC_ENTRY} does not send packets to fwsync's "
                                          "rules, or they are empty")
    found, why = _walk("FORWARD", chains, "")
    if found is None:
        return FamilyReach(family, False, "nothing in FORWARD leads to fwsync's chains")
    if not found:
        return FamilyReach(family, False, why)
    if FWSYNC_INPUT not in chains:
        return FamilyReach(family, False, "fwsync's INPUT-path chain is missing: the ports "
                                          "docker-proxy serves are not judged")
    found_in, why_in = _walk("INPUT", chains, "", FWSYNC_INPUT)
    if not found_in:
        return FamilyReach(family, False, why_in or "nothing in INPUT leads to fwsync's "
                                                    "INPUT-path chain")
    return FamilyReach(family, True, f"{why}; {why_in}")


@dataclass(frozen=True)
class NftBaseChain:
    """One of fwsync's base chains as the kernel lists it (`nft -j list`): every field is read
    back, none is taken from what fwsync meant to write."""

    hook: str | None  # None: not a base chain (or missing)
    priority: int | None
    policy: str | None
    jumps_to_rules: bool  # a rule of it sends packets on to fwsync's rule chain
    rules_present: bool  # fwsync's rule chain holds rules
    dormant: bool = False  # the table is switched off (`flags dormant`): none of it runs
    holds_rules: bool = True  # the chain itself holds rules (False: flushed)


def _misregistered(chain: NftBaseChain | None, hook: str) -> str | None:
    """Why `chain` does not run on `hook` before the filter priority with fwsync's policy."""
    if chain is None or chain.hook is None:
        return f"fwsync's {hook} base chain is missing: no {hook} hook sends packets to its table"
    if chain.hook != hook:
        return f"fwsync's {hook} base chain hooks {chain.hook}, not {hook}"
    if chain.priority is None or chain.priority >= FILTER_PRIORITY:
        return (f"fwsync's {hook} base chain runs at priority {chain.priority}, not before the "
                f"filter priority ({FILTER_PRIORITY}) of Docker's, ufw's and iptables' chains")
    if chain.policy != "accept":
        # fwsync writes `policy accept`: its rules decide, and what they let on (a `return`, an
        # accept) goes on to Docker's and the host's chains. Any other policy drops that too.
        return (f"fwsync's {hook} base chain has policy {chain.policy}, not accept: it drops "
                "what fwsync's rules let on")
    return None


def nftables_reach(chain: NftBaseChain | None, input_chain: NftBaseChain | None = None
                   ) -> tuple[FamilyReach, ...]:
    """The inet table serves both families alike. `chain`: fwsync's forward-hook base chain;
    `input_chain`: its input-hook one (the ports docker-proxy serves). Both must be registered
    before the filter priority, with policy accept. The forward chain must send packets on to
    fwsync's rules; the input chain must not be flushed. It sends to the rules only the ports
    docker-proxy serves, so with none of those it holds fwsync's `return`s and no jump, which
    is still reached; a jump deleted by hand from a chain that keeps its other rules is drift
    that `plan` shows (the chain's rules differ from the rendered ones)."""
    if chain is not None and chain.dormant:
        why = "fwsync's table is dormant: the kernel runs none of its chains"
    elif (bad := _misregistered(chain, "forward")) is not None:
        why = bad
    elif chain is None or not chain.jumps_to_rules or not chain.rules_present:
        why = "fwsync's base chain does not send packets to its rules, or they are empty"
    elif (bad_in := _misregistered(input_chain, "input")) is not None:
        why = f"{bad_in}: the ports docker-proxy serves are not judged first"
    elif input_chain is None or not input_chain.holds_rules:
        why = ("fwsync's input base chain is flushed: nothing sends the ports docker-proxy "
               "serves to fwsync's rules")
    else:
        path = (f"hook forward, priority {chain.priority} → fwsync's rules; hook input, "
                f"priority {input_chain.priority}")
        return FamilyReach(4, True, path), FamilyReach(6, True, path)
    return FamilyReach(4, False, why), FamilyReach(6, False, why)
