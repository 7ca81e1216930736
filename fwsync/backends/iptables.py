"""The iptables backend: fwsync's chains reached from DOCKER-USER, via iptables-restore.

Each family is written in one `iptables-restore --noflush` transaction: declaring a chain there
flushes it, so the whole of fwsync's chains is replaced at once and nothing else is touched.
Address sets are ipsets whose names carry a digest of their contents: new contents get a new set,
loaded before the transaction that points the rules at it, and the old set is destroyed after.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fwsync.backends.base import LIST_BELOW, BackendError
from fwsync.backends.ipset_netlink import IpsetHeader, ipset_headers
from fwsync.backends.iptables_render import (
    FORWARD_CHAIN,
    INBOUND_CHAIN,
    INPUT_CHAIN,
    INPUT_ENTRY,
    LIMITED_CHAIN,
    OPTIONAL_CHAINS,
    OWN_CHAINS,
    SET_PREFIX,
    chain_key,
    is_temp_set,
    jump_key,
    jump_line,
    parse_set_name,
    render_family,
    set_kernel_name,
    set_key,
    temp_set_name,
)
from fwsync.backends.nft_netlink import NFPROTO_IPV4, NFPROTO_IPV6, chain_names
from fwsync.core.audit import AUDIT_VERDICT
from fwsync.core.counts import Decided
from fwsync.core.diff import Desired, Plan, State
from fwsync.core.enforcing import Enforcement, iptables_reach
from fwsync.core.ruleset import Family, Ruleset
from fwsync.core.tallies import TALLY_VERDICT, parse_tally

FAMILIES: tuple[Family, ...] = (4, 6)
DOCKER_USER = "DOCKER-USER"
ENTRY_CANDIDATES = ("FORWARD", DOCKER_USER)
DOCKER_USER_JUMP = f"-A FORWARD -j {DOCKER_USER}"  # Docker's, exactly as iptables-save lists it


def own_jump(chain: str) -> str:
    """fwsync's jump exactly as iptables-save lists it: a rule with more to it (`-s ... -j
    FWSYNC-FORWARD`) is someone else's."""
    return f"-A {chain} -j {FORWARD_CHAIN}"


# fwsync's jump to its INPUT-path chain, exactly as iptables-save lists it: a user's conditional
# jump there (`-A INPUT -s 203.0.113.0/24 -j FWSYNC-INPUT`) is someone else's rule.
OWN_INPUT_JUMP = f"-A {INPUT_ENTRY} -j {INPUT_CHAIN}"
_JUMP_TARGET = re.compile(r"(?:^| )-[jg] (\S+)")


@dataclass
class FamilyState:
    chains: dict[str, list[str]] = field(default_factory=dict)  # chain → its -A lines
    # chain → each -A line's [packets, bytes], where the text was saved with -c
    counters: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def jumps(self) -> list[tuple[str, int]]:
        """(chain, position) of fwsync's jumps. In FORWARD, Docker's own jump to DOCKER-USER
        above fwsync's is not counted: Docker before 28 puts it back on top at every network
        it creates, and fwsync's jump below it judges the same packets (JUDGED_LABEL), so
        that is not drift to repair at each `docker network create`."""
        found = []
        for chain in ENTRY_CANDIDATES:
            pos = 0
            for line in self.chains.get(chain, []):
                if chain == "FORWARD" and line == DOCKER_USER_JUMP:
                    continue
                pos += 1
                if line == own_jump(chain):
                    found.append((chain, pos))
        return found

    @property
    def input_jumps(self) -> list[int]:
        """Positions in INPUT of fwsync's jump to its INPUT-path chain."""
        return [pos for pos, line in enumerate(self.chains.get(INPUT_ENTRY, []), start=1)
                if line == OWN_INPUT_JUMP]

    @property
    def foreign_jumps(self) -> dict[str, str]:
        """fwsync's chains that someone else's rule jumps to → the first such rule. remove()
        empties such a chain but leaves it: deleting it would need their rule gone first."""
        ours = {OWN_INPUT_JUMP, *(own_jump(c) for c in ENTRY_CANDIDATES)}
        found: dict[str, str] = {}
        for chain, lines in self.chains.items():
            if chain in OWN_CHAINS:
                continue
            for line in lines:
                m = _JUMP_TARGET.search(line)
                if m and m.group(1) in OWN_CHAINS and line not in ours:
                    found.setdefault(m.group(1), line)
        return found

    def left_for_others(self, chain: str) -> bool:
        """An empty chain of fwsync's that remove() kept for someone else's jump to it, with
        no jump of fwsync's here: nothing of fwsync's (else every plan of the other backend
        would plan to remove it again, and every remove find it)."""
        return not self.chains.get(chain) and chain in self.foreign_jumps \
            and not self.all_jumps

    @property
    def all_jumps(self) -> list[tuple[str, int, str]]:
        """(chain, position, target) of every jump to fwsync's chains from others' chains."""
        return [*((c, p, FORWARD_CHAIN) for c, p in self.jumps),
                *((INPUT_ENTRY, p, INPUT_CHAIN) for p in self.input_jumps)]

    @property
    def jump_lines(self) -> tuple[str, ...]:
        lines = tuple(jump_line(c, p) for c, p in self.jumps)
        return lines + tuple(jump_line(INPUT_ENTRY, p, INPUT_CHAIN) for p in self.input_jumps)

    @property
    def entries(self) -> tuple[str, ...]:
        """Where fwsync jumps from: FORWARD, first, always, and DOCKER-USER too where Docker
        made it. FORWARD's own jump holds while Docker's to DOCKER-USER is gone (Docker before
        28 deletes and inserts it again at every network it creates; Docker 20.10's IPv6 has
        none; ufw's chains after a reload may come first). The DOCKER-USER jump holds while
        Docker's rules are above fwsync's in FORWARD: a restarting dockerd inserts its rules
        at the top and puts its jump to DOCKER-USER back on top at the end. A packet that
        passes both is judged once (JUDGED_LABEL)."""
        if DOCKER_USER not in self.chains:
            return ("FORWARD",)
        return ("FORWARD", DOCKER_USER)


@dataclass
class KernelView:
    families: dict[Family, FamilyState]
    sets: dict[str, int]  # fwsync's sets (owned_set): kernel name → number of elements


_COUNTERS = re.compile(r"^\[(\d+):(\d+)\] ")


def parse_save(text: str) -> FamilyState:
    """iptables-save's text, with or without -c's `[packets:bytes]` before each rule."""
    state = FamilyState()
    for raw in text.splitlines():
        line = raw.strip()
        counted = _COUNTERS.match(line)
        if counted:
            line = line[counted.end():]
        if line.startswith(":"):
            state.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain = line.split()[1]
            state.chains.setdefault(chain, []).append(line)
            if counted:
                state.counters.setdefault(chain, []).append(
                    (int(counted.group(1)), int(counted.group(2))))
    return state


_COMMENT = re.compile(r' --comment ("(?:[^"\\]|\\.)*"|\S+)')
# A limit's over-the-rate line that logs goes to FWSYNC-LIMITED, which refuses (iptables_render).
_VERDICT = {"RETURN": "allow", "ACCEPT": "allow", "DROP": "deny", "REJECT": "reject",
            LIMITED_CHAIN: "reject"}


def decided_of(state: FamilyState) -> list[Decided]:
    """The counted decisions of fwsync's inbound chain (a state saved with -c): a rule's
    packets are the new connections it decided (the chain sees only a first packet)."""
    out = []
    lines = state.chains.get(INBOUND_CHAIN, [])
    for line, (packets, _bytes) in zip(lines, state.counters.get(INBOUND_CHAIN, []),
                                       strict=False):
        target = _JUMP_TARGET.search(line)
        # No target: a per-port count (core/tallies) or an audited rule's count (core/audit).
        verdict = _VERDICT.get(target.group(1)) if target else AUDIT_VERDICT
        if verdict is None:
            continue
        comment = _COMMENT.search(line)
        text = comment.group(1) if comment else ""
        if text.startswith('"') and text.endswith('"') and len(text) >= 2:
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        tally = parse_tally(text) if target is None else None
        if tally is not None:
            out.append(Decided(tally[1], TALLY_VERDICT, packets, port=tally[0]))
        else:
            out.append(Decided(text, verdict, packets))
    return out


def owned_set(create: str) -> str | None:
    """The set's name if an `ipset save` create line is one of fwsync's sets, else None.

    The one ownership test for ipsets, used by read, apply and remove alike: a set is fwsync's
    only when its whole name is `fws<family>-<define>-<6 hex digits>` (as set_kernel_name makes
    it), it is a `hash:net`, and its family is the one its name says. A user's `fwsblock` or a
    look-alike `fws4-office-zzzzzz` is someone else's and is never read, changed or destroyed."""
    words = create.split()
    if len(words) < 5 or words[0] != "create" or words[2] != "hash:net":
        return None
    parsed = parse_set_name(words[1])
    if parsed is None:
        return None
    family = words[words.index("family") + 1] if "family" in words[3:] else None
    return words[1] if family == ("inet" if parsed[0] == 4 else "inet6") else None


def parse_ipset_terse(text: str) -> dict[str, int]:
    """fwsync's sets (owned_set) → their element counts, from `ipset list -terse`: names,
    headers and counts, no elements, so it costs the same for 10 entries as for 100k."""
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == "Name":
            records.append({})
        if records:
            records[-1][key] = value.strip()
    counts: dict[str, int] = {}
    for r in records:
        create = f"create {r.get('Name', '')} {r.get('Type', '')} {r.get('Header', '')}"
        name = owned_set(create)
        if name is not None and r.get("Number of entries", "").isdigit():
            counts[name] = int(r["Number of entries"])
    return counts


def owned_counts(headers: dict[str, IpsetHeader]) -> dict[str, int]:
    """parse_ipset_terse's answer from the kernel's set headers (ipset_netlink)."""
    counts: dict[str, int] = {}
    for name, h in headers.items():
        if h.elements is not None and owned_set(f"create {name} {h.type} family {h.family}"):
            counts[name] = h.elements
    return counts


def _proc_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().split()
    except OSError:
        return []


def parse_ipset_save(text: str) -> dict[str, list[str]]:
    """fwsync's sets (owned_set) → their elements; every other set is left out."""
    sets: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("create "):
            name = owned_set(line)
            if name is not None:
                sets[name] = []
        elif line.startswith("add "):
            words = line.split()
            if len(words) >= 3 and words[1] in sets:
                sets[words[1]].append(words[2])
    return {name: sorted(elems) for name, elems in sets.items()}


def _family_display(name: str) -> tuple[Family, str]:
    parsed = parse_set_name(name)
    assert parsed is not None
    return parsed


def _tool(family: Family, variant: str, suffix: str) -> str:
    return f"{'ip' if family == 4 else 'ip6'}tables-{variant}{suffix}"


class IptablesBackend:
    name = "iptables"
    proxy_catchall = False  # no match for docker-proxy's sockets on INPUT (core/build.py)

    def __init__(self, variant: str | None = None) -> None:
        self._variant = variant or os.environ.get("FWSYNC_IPTABLES") or None
        self._reason = ""
        self._view: KernelView | None = None
        self._view_fresh = False  # the last read's view, not yet used by an apply
        self._rendered_from: KernelView | None = None  # read by render(), not yet by read()
        self._prefetched: dict[str, str] = {}  # set name → `ipset save` text (_read_view)

    # -- kernel I/O ---------------------------------------------------------------------------

    def _run(self, cmd: Sequence[str], stdin: str | None = None, what: str = "") -> str:
        try:
            proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True,
                                  check=False)
        except FileNotFoundError as exc:
            raise BackendError(f"{what or cmd[0]}: {cmd[0]} is not installed ({exc})") from exc
        if proc.returncode != 0:
            err = proc.stderr.strip() or proc.stdout.strip()
            raise BackendError(f"{what or ' '.join(cmd)} failed: {err}")
        return proc.stdout

    def _run_all(self, cmds: Sequence[tuple[Sequence[str], str]]) -> list[str]:
        """Several read-only commands at once (each `_run`'s errors): a read waits for the
        slowest of iptables-save, ip6tables-save and ipset instead of for all three in turn."""
        procs: list[tuple[subprocess.Popen[str], Sequence[str], str]] = []
        try:
            for cmd, what in cmds:
                try:
                    procs.append((subprocess.Popen(list(cmd), stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, text=True),
                                  cmd, what))
                except FileNotFoundError as exc:
                    raise BackendError(f"{what or cmd[0]}: {cmd[0]} is not installed "
                                       f"({exc})") from exc
            out = []
            for proc, cmd, what in procs:
                stdout, stderr = proc.communicate()
                if proc.returncode != 0:
                    err = stderr.strip() or stdout.strip()
                    raise BackendError(f"{what or ' '.join(cmd)} failed: {err}")
                out.append(stdout)
            return out
        finally:
            for proc, _cmd, _what in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def detect(self) -> str:
        if self._variant is None:
            self._variant, self._reason = self._choose_variant()
        elif not self._reason:
            self._reason = f"iptables-{self._variant} (chosen by FWSYNC_IPTABLES)"
        return self._reason

    def _choose_variant(self) -> tuple[str, str]:
        # Reading legacy tables that don't exist would create them: look before touching.
        names = Path("/proc/net/ip_tables_names")
        if names.exists() and "filter" in names.read_text().split():
            legacy = parse_save(self._run(["iptables-legacy-save", "-t", "filter"]))
            if any(c in legacy.chains for c in ("DOCKER", DOCKER_USER, FORWARD_CHAIN)):
                return "legacy", "iptables-legacy: Docker's (or fwsync's) chains are there"
        nft = parse_save(self._run(["iptables-nft-save", "-t", "filter"]))
        if any(c in nft.chains for c in ("DOCKER", DOCKER_USER, FORWARD_CHAIN)):
            return "nft", "iptables-nft: Docker's (or fwsync's) chains are there"
        return "nft", "iptables-nft: no Docker chains yet; nf_tables is the system's default"

    def docker_ipv6_without_user_chain(self) -> bool:
        """Docker writes ip6tables rules (its DOCKER chain is there) but has no DOCKER-USER
        chain there (20.10 with --ip6tables; ip6tables' DOCKER-USER came with 23.0). Then
        fwsync can only jump from FORWARD itself, and Docker inserts its own rules above that
        jump at every start and for every new network: a published IPv6 port is open until the
        next apply, whatever the daemon does in between."""
        if self.variant == "legacy":
            names = Path("/proc/net/ip6_tables_names")  # reading a missing table creates it
            if not (names.exists() and "filter" in names.read_text().split()):
                return False
        chains = parse_save(self._run([_tool(6, self.variant, "-save"), "-t", "filter"])).chains
        return "DOCKER" in chains and DOCKER_USER not in chains

    @property
    def variant(self) -> str:
        self.detect()
        assert self._variant is not None
        return self._variant

    def _read_view(self, prefetch: bool = False) -> KernelView:
        """The tables and fwsync's ipsets' counts. `prefetch` (a read that will list sets):
        the elements of every set below LIST_BELOW, which read() always lists, are saved by
        processes started beside iptables-save's rather than after them (self._prefetched):
        one round of processes less on the daemon's path (a flushed chain's repair)."""
        # The ipsets' names and counts over netlink (no process), else from `ipset list -terse`.
        headers = ipset_headers()
        small = sorted(n for n, count in owned_counts(headers).items() if count < LIST_BELOW) \
            if prefetch and headers is not None else []
        out = self._run_all([
            *(([_tool(f, self.variant, "-save"), "-c", "-t", "filter"], "") for f in FAMILIES),
            *([(["ipset", "list", "-terse"], "ipset list -terse")] if headers is None else []),
            *((["ipset", "save", name], f"ipset save {name}") for name in small)])
        families: dict[Family, FamilyState] = {4: parse_save(out[0]), 6: parse_save(out[1])}
        sets = parse_ipset_terse(out[2]) if headers is None else owned_counts(headers)
        self._prefetched = dict(zip(small, out[len(out) - len(small):], strict=True))
        self._view = KernelView(families=families, sets=sets)
        return self._view

    # -- the Backend interface ----------------------------------------------------------------

    def read(self, desired: State | None = None) -> State:
        rendered, self._rendered_from = self._rendered_from, None
        view = rendered if rendered is not None and desired is not None \
            else self._read_view(prefetch=True)
        prefetched, self._prefetched = self._prefetched, {}
        # What apply() starts from, as of this read: make_plan reads just before apply, under
        # fwsync's lock (one read less on the daemon's path from an event to the kernel).
        self._view_fresh = True
        state: dict[str, tuple[str, ...]] = {}
        for family, fs in view.families.items():
            for chain in OWN_CHAINS:
                if chain in fs.chains and not fs.left_for_others(chain):
                    state[chain_key(family, chain)] = tuple(fs.chains[chain])
            if fs.all_jumps:
                reach = iptables_reach(family, fs.chains)
                # Not reached is drift even where every line is in place: plan and the
                # daemon's drift check say so, with why.
                state[jump_key(family)] = fs.jump_lines + (
                    () if reach.reached else (f"not reached: {reach.why}",))
        keys = _set_keys(view)
        for name, key in keys.items():
            want = desired.get(key) if desired is not None else None
            if (want is not None and len(want) == view.sets[name] >= LIST_BELOW
                    and set_kernel_name(*_family_display(name), want) == name):
                # Named by the digest of what desired says it holds, with as many elements:
                # the same set (fwsync fills a set under a temporary name and renames it only
                # once complete; a hand edit that keeps the count is what a full read,
                # desired=None, is for).
                state[key] = want
        for name, text in prefetched.items():
            if name in keys and keys[name] not in state:
                state[keys[name]] = tuple(parse_ipset_save(text).get(name, ()))
        listed = [name for name, key in keys.items() if key not in state]
        if listed:
            texts = self._run_all([(["ipset", "save", name], f"ipset save {name}")
                                   for name in listed])
            for name, text in zip(listed, texts, strict=True):
                state[keys[name]] = tuple(parse_ipset_save(text).get(name, ()))
        return state

    def decided(self) -> tuple[Decided, ...]:
        """The inbound chain's counted decisions, both families (iptables-save -c: no ipset
        is listed)."""
        out = self._run_all([([_tool(f, self.variant, "-save"), "-c", "-t", "filter"], "")
                             for f in FAMILIES])
        return tuple(d for text in out for d in decided_of(parse_save(text)))

    def holds(self) -> bool:
        cheap = self._holds_cheaply()
        if cheap is not None:
            return cheap
        view = self._read_view()
        return bool(view.sets) or any(
            fs.all_jumps or any(c in fs.chains and not fs.left_for_others(c) for c in OWN_CHAINS)
            for fs in view.families.values())

    def _holds_cheaply(self) -> bool | None:
        """holds() without a process (every plan of the nftables backend asks whether the
        iptables backend left anything: that took iptables-save twice and ipset, plus the
        variant's detection): fwsync's chains in iptables-nft's tables and fwsync's ipsets,
        asked over netlink. None when that cannot answer: netlink unusable, or iptables-legacy
        in use here (its tables can only be read by iptables-legacy-save)."""
        if self._variant == "legacy" or any(
                "filter" in _proc_lines(f"/proc/net/{t}_tables_names") for t in ("ip", "ip6")):
            return None
        headers = ipset_headers()
        chains = [chain_names(f) for f in (NFPROTO_IPV4, NFPROTO_IPV6)]
        if headers is None or any(c is None for c in chains):
            return None
        return bool(owned_counts(headers)) or any(
            ("filter", own) in c for c in chains if c is not None for own in OWN_CHAINS)

    def enforcement(self) -> Enforcement:
        view = self._read_view()
        return Enforcement(self.name, tuple(iptables_reach(f, view.families[f].chains)
                                            for f in FAMILIES))

    def render(self, ruleset: Ruleset) -> Desired:
        if self._view is None:
            # A plan renders, then reads against what it rendered: both from this one look
            # at the kernel (a second would cost a few ms and could disagree with the first).
            self._rendered_from = self._read_view(prefetch=True)
        view = self._view
        assert view is not None
        state: dict[str, tuple[str, ...]] = {}
        for family in FAMILIES:
            state.update(render_family(ruleset, family, view.families[family].entries))
        return Desired(state)

    def snapshot(self) -> Desired:
        # The lines are what iptables-restore and ipset take: nothing more is needed.
        return Desired(self.read())

    def check(self, plan: Plan) -> None:
        """iptables has no dry run that reaches the kernel (`iptables-restore --test` only
        parses): a failing apply rolls back instead."""

    def apply(self, plan: Plan) -> None:
        view = self._view if self._view_fresh and self._view is not None else self._read_view()
        self._view_fresh = False  # one apply per read: a later apply reads again
        wanted = _wanted_sets(plan.desired)
        changed = {c.key for c in plan.changes}
        created = self._load_sets(view, wanted, changed)
        # A family whose chains and jumps the plan leaves as they are is not written again:
        # the same text would replace the same rules (a container publishing on IPv4 only, a
        # set refilled in place). One process less on the daemon's path from event to kernel.
        done, error = self._restore_families(
            {f: _restore_text(plan.desired, f, view.families[f], changed) for f in FAMILIES
             if jump_key(f) in changed or any(chain_key(f, c) in changed for c in OWN_CHAINS)})
        if error is not None:
            self._rollback(view, done, created)
            raise BackendError(f"{error}; nothing was changed")
        stale = [name for name in view.sets if name not in wanted and not is_temp_set(name)]
        if stale:
            self._restore_sets(f"destroy {name}" for name in stale)

    def _load_sets(self, view: KernelView, wanted: dict[str, tuple[str, ...]],
                   changed: set[str]) -> list[str]:
        """Make every wanted set exist under its content name with exactly its contents,
        before any rule points at it; return the names that did not exist before.

        A name is trusted only once its contents are verified: the plan's read listed the set
        (a small one, one whose element count is not what its name says, or any with
        `--full`) and found it equal, or counted as many elements as its name says. A set
        that holds anything else — an element deleted or added by hand, a set filled by an
        older fwsync that was killed — is refilled. Filling happens under a temporary name,
        then `ipset rename` (a new set) or `ipset swap` (a set the rules may be using) makes it
        the real one in one step, so no packet meets a half-filled set."""
        unfinished = [name for name in view.sets if is_temp_set(name)]
        if unfinished:  # left by an interrupted apply; nothing refers to a temporary set
            self._restore_sets(f"destroy {name}" for name in unfinished)
        new = [name for name in wanted if name not in view.sets]
        keys = _set_keys(view)
        wrong = [name for name in wanted if name in view.sets
                 and (view.sets[name] != len(wanted[name]) or keys.get(name) in changed)]
        if not new and not wrong:
            return []
        try:
            self._restore_sets(_ipset_create(temp_set_name(name), wanted[name])
                               for name in [*new, *wrong])
            self._restore_sets([*(f"rename {temp_set_name(n)} {n}" for n in new),
                                *(f"swap {temp_set_name(n)} {n}\ndestroy {temp_set_name(n)}"
                                  for n in wrong)])
        except BackendError as exc:
            raise BackendError(f"{exc}; no rule was changed (a set left half-made is "
                               "temporary and goes with the next apply)") from exc
        return new

    def remove(self) -> State:
        before = dict(self.read())
        view = self._view
        assert view is not None
        for family in FAMILIES:
            fs = view.families[family]
            text = _remove_text(fs)
            if text:
                self._restore(family, text)
            for chain, line in fs.foreign_jumps.items():
                if chain_key(family, chain) in before:  # said beside what is removed
                    before[f"{chain_key(family, chain)} kept empty: `{line}` is not fwsync's "
                           "and jumps to it"] = ()
        if view.sets:
            self._restore_sets(f"destroy {name}" for name in view.sets)
        return before

    # -- helpers ------------------------------------------------------------------------------

    def _restore_families(self, texts: dict[Family, str]) -> tuple[list[Family], str | None]:
        """One `iptables-restore --noflush` transaction per family, both at once (IPv4 and IPv6
        are separate tables; `-w` makes iptables-legacy's take turns on the xtables lock).
        Returns the families written and the first error, for the caller to roll back."""
        procs: list[tuple[Family, str, subprocess.Popen[str]]] = []
        error: str | None = None
        for family, text in texts.items():
            tool = _tool(family, self.variant, "-restore")
            try:
                proc = subprocess.Popen([tool, "-w", "--noflush", "--counters"],
                                        stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
            except FileNotFoundError as exc:
                error = error or f"{tool}: {tool} is not installed ({exc})"
                break
            procs.append((family, tool, proc))
            # Fed as it starts: the other family's process runs meanwhile.
            stdin, proc.stdin = proc.stdin, None  # written here; communicate() only reads
            assert stdin is not None
            with contextlib.suppress(BrokenPipeError):  # it failed early: its stderr says why
                stdin.write(text)
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        done: list[Family] = []
        for family, tool, proc in procs:
            out, err = proc.communicate()
            if proc.returncode == 0:
                done.append(family)
            elif error is None:
                error = f"{tool} --noflush failed: {err.strip() or out.strip()}"
        return done, error

    def _restore(self, family: Family, text: str) -> None:
        tool = _tool(family, self.variant, "-restore")
        self._run([tool, "--noflush", "--counters"], stdin=text, what=f"{tool} --noflush")

    def _restore_sets(self, lines: Iterable[str]) -> None:
        self._run(["ipset", "restore"], stdin="\n".join(lines) + "\n", what="ipset restore")

    def _rollback(self, view: KernelView, done: list[Family], created: list[str]) -> None:
        """Put back what a half-finished apply changed, from what was read just before it."""
        for family in done:
            now = parse_save(self._run([_tool(family, self.variant, "-save"), "-c", "-t",
                                        "filter"]))
            before = view.families[family]
            if any(c in before.chains for c in OWN_CHAINS):
                self._restore(family, _restore_text(_view_state(before, family), family, now))
            else:
                self._restore(family, _remove_text(now))
        if created:
            self._restore_sets(f"destroy {name}" for name in created)


def _set_keys(view: KernelView) -> dict[str, str]:
    """fwsync's ipsets → their state keys, as plan sees them: per family and define, the set
    the family's rules use (else the first by name) under the define's key; any other set of
    fwsync's — an old one an interrupted apply left, a temporary one — under a key of its own,
    so that plan shows it and apply takes it out."""
    used = {name for fs in view.families.values()
            for line in fs.chains.get(OWN_CHAINS[1], ())
            for name in _MATCH_SET.findall(line)}
    keys: dict[str, str] = {}
    for name in sorted(view.sets, key=lambda n: (n not in used, n)):
        parsed = parse_set_name(name)
        if parsed is None:
            continue
        key = set_key(*parsed)
        if key in keys.values() or is_temp_set(name):
            key = f"{key} (unused: {name})"
        keys[name] = key
    return keys


_MATCH_SET = re.compile(r"--match-set (\S+) ")


def _wanted_sets(desired: State) -> dict[str, tuple[str, ...]]:
    wanted: dict[str, tuple[str, ...]] = {}
    for key, elements in desired.items():
        family_part, kind, *rest = key.split(" ", 2)
        if kind == "set" and rest and " " not in rest[0]:  # not a key of _set_keys' extras
            family: Family = 6 if family_part == "ipv6" else 4
            wanted[set_kernel_name(family, rest[0], elements)] = elements
    return wanted


def _ipset_create(name: str, elements: tuple[str, ...]) -> str:
    family = "inet6" if name.startswith(f"{SET_PREFIX}6") else "inet"
    maxelem = max(65536, 1 << max(len(elements), 1).bit_length())
    lines = [f"create {name} hash:net family {family} maxelem {maxelem}"]
    lines.extend(f"add {name} {e}" for e in elements)
    return "\n".join(lines)


def _restore_text(desired: State, family: Family, current: FamilyState,
                  changed: set[str] | None = None) -> str:
    """One transaction: the own chains replaced (with `changed`, the plan's keys, only those
    that changed or are missing), the entry jumps made first in their chains.

    An own chain the plan leaves as it is is not written again. Replacing a chain deletes its
    rules, and the kernel frees deleted rules after an RCU grace period that the restore
    process then waits for when it closes its netlink socket: 15-16 ms here, on every
    iptables-nft-restore that deletes a rule, against ~1 ms for one that only adds (a flushed
    chain put back)."""
    wanted = [c for c in OWN_CHAINS if c not in OPTIONAL_CHAINS or chain_key(family, c) in desired]
    chains = [c for c in wanted if changed is None or c not in current.chains
              or chain_key(family, c) in changed]
    # A chain made only when used, no longer wanted: emptied and deleted once the chains that
    # jumped to it are written without the jump (kept, emptied, where someone else's rule
    # refers to it, as _remove_text does).
    dropped = [c for c in OPTIONAL_CHAINS if c in current.chains and c not in wanted]
    lines = ["*filter"]
    lines.extend(f":{chain} - [0:0]" for chain in chains)
    for chain in chains:
        rules = desired.get(chain_key(family, chain), ())
        lines.extend(_carried(rules, current, chain) if chain == INBOUND_CHAIN else rules)
    want_jumps = tuple(j for j in desired.get(jump_key(family), ())
                       if not j.startswith("not reached"))
    have_jumps = tuple(jump_line(c, p, t) for c, p, t in current.all_jumps)
    if want_jumps != have_jumps:
        for chain, _pos, target in current.all_jumps:
            lines.append(f"-D {chain} -j {target}")
        for jump in want_jumps:
            chain, _rule, pos, _j, target = jump.split()
            lines.append(f"-I {chain} {pos} -j {target}")
    lines.extend(f"-F {chain}" for chain in dropped)
    lines.extend(f"-X {chain}" for chain in dropped if chain not in current.foreign_jumps)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _carried(rules: Iterable[str], current: FamilyState, chain: str) -> list[str]:
    """The inbound chain's rules, each starting from the counts of the rule the kernel holds
    with the same text (the n-th such for the n-th): a decision written again keeps what it
    counted (status, the metrics). Needs the restore's --counters."""
    held: dict[str, list[tuple[int, int]]] = {}
    for line, count in zip(current.chains.get(chain, []), current.counters.get(chain, []),
                           strict=False):
        held.setdefault(line, []).append(count)
    out = []
    for line in rules:
        kept = held.get(line)
        if kept:
            packets, bytes_ = kept.pop(0)
            out.append(f"[{packets}:{bytes_}] {line}" if packets or bytes_ else line)
        else:
            out.append(line)
    return out


def _remove_text(current: FamilyState) -> str:
    own = [c for c in OWN_CHAINS if c in current.chains]
    if not own and not current.all_jumps:
        return ""
    lines = ["*filter"]
    lines.extend(f"-D {chain} -j {target}" for chain, _pos, target in current.all_jumps)
    lines.extend(f"-F {chain}" for chain in own)
    kept = current.foreign_jumps  # someone else's rule refers to it: emptied, not deleted
    lines.extend(f"-X {chain}" for chain in own if chain not in kept)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _view_state(fs: FamilyState, family: Family) -> State:
    state: dict[str, tuple[str, ...]] = {
        chain_key(family, c): tuple(fs.chains[c]) for c in OWN_CHAINS if c in fs.chains
    }
    state[jump_key(family)] = fs.jump_lines
    return state
