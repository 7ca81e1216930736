"""The nftables backend: fwsync's own `table inet fwsync`, through libnftables' JSON API.

An apply is two transactions: the first creates the sets that are new (nothing uses them yet, so
packets see no change), the second replaces every rule at once and drops the sets nothing uses
any more; a packet sees the old rules or the new ones, never a mix (nft_transactions says why it
takes two). `plan` sends both as one batch in dry-run mode: the kernel validates it without
committing, so a plan that apply could not carry out says so.

The proxy chain (the INPUT path's catch-all, nft_table.PROXY_CHAIN) is written and read in
nft's text syntax, in a transaction of its own before the other two, and only when it changes;
the switch leaves it alone, and a failed switch puts its old rules back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from fwsync.backends.base import LIST_BELOW, BackendError
from fwsync.backends.nft_counts import COUNT_BELOW, element_count, kernel_elements
from fwsync.backends.nft_netlink import inet_table_flags
from fwsync.backends.nft_rule_counts import Counters, carried, decided, held_counters
from fwsync.backends.nft_sets import content_base, replaced_by
from fwsync.backends.nft_state import (
    TABLE_KEY,
    chain_key,
    objects_state,
    set_key,
    set_key_names,
)
from fwsync.backends.nft_table import FAMILY, PROXY_CHAIN, TABLE, TEXT_RULE, Batch
from fwsync.backends.nft_transactions import (
    ChainHead,
    chain_heads,
    cleanup_batch,
    delete_batch,
    is_meter,
    staging_batch,
    switch_batch,
    text_chain_rules,
    text_rules,
    writable_objects,
)
from fwsync.backends.nftables_render import has_proxy_catchall, table_objects
from fwsync.core.counts import Decided
from fwsync.core.diff import NOT_LISTED, Desired, Plan, State
from fwsync.core.enforcing import Enforcement, NftBaseChain, nftables_reach
from fwsync.core.ruleset import Ruleset


def _nft() -> Any:
    try:
        import nftables  # Debian's python3-nftables: ctypes over libnftables
    except ImportError as exc:
        raise BackendError(
            "the nftables backend needs libnftables' Python bindings, which this Python cannot "
            "import: install Debian's python3-nftables (not on PyPI) and let fwsync's venv see "
            "it (`pipx install --system-site-packages`, `python3 -m venv "
            "--system-site-packages`)") from exc
    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(False)
    return nft


# A libnftables context that listed or wrote this many set elements or more is freed after
# (NftablesBackend._release): its cache is big; a smaller one is kept for the next call.
RELEASE_ABOVE = 5000


@dataclass(frozen=True)
class Seen:
    """What an apply needs to know of the table as a read found it."""

    sets: list[str]
    chains: dict[str, ChainHead]
    counters: Counters  # the inbound chain's, carried over by the apply (nft_rule_counts)


def seen_of(objects: list[dict[str, Any]] | None) -> Seen | None:
    if objects is None:
        return None
    return Seen([o["set"]["name"] for o in objects if "set" in o], chain_heads(objects),
                held_counters(objects))


class NftablesBackend:
    name = "nftables"
    proxy_catchall = True  # `socket cgroupv2` on dockerd's cgroup (nftables_render.py)

    def __init__(self) -> None:
        self._nft: Any = None
        # The table's sets and chains as of the last read (None: no table), until an apply
        # has used them.
        self._seen: Seen | None = None
        self._seen_fresh = False
        # Set name (the digest of its content) → how many elements the kernel holds for it
        # (nft_counts.kernel_elements): worked out once per set, not on every drift tick.
        self._expected: dict[str, int | None] = {}
        # The proxy chain's rules as the last read found them: what a failed apply puts back.
        self._proxy_held: list[dict[str, str]] = []

    @property
    def nft(self) -> Any:
        if self._nft is None:
            self._nft = _nft()
        return self._nft

    def _cmd(self, batch: Batch, what: str, dry_run: bool = False) -> Any:
        self.nft.set_dry_run(dry_run)
        try:
            rc, output, error = self.nft.json_cmd({"nftables": batch})
        except ValueError as exc:  # the bindings parse libnftables' output as JSON
            raise BackendError(f"{what}: libnftables answered with something that is not "
                               f"JSON ({exc})") from exc
        finally:
            self.nft.set_dry_run(False)
        if rc != 0:
            raise BackendError(f"{what}: libnftables said: {' '.join(str(error).split())}")
        return output

    def _text(self, commands: str, what: str, dry_run: bool = False) -> str:
        """Commands in nft's own syntax, one transaction: the proxy chain's rules
        (nft_table.PROXY_CHAIN), which libnftables' JSON cannot write or list whole."""
        nft = self.nft
        nft.set_json_output(False)
        nft.set_dry_run(dry_run)
        try:
            rc, output, error = nft.cmd(commands)
        finally:
            nft.set_dry_run(False)
            nft.set_json_output(True)
        if rc != 0:
            raise BackendError(f"{what}: libnftables said: {' '.join(str(error).split())}")
        return str(output)

    def _with_text_rules(self, objects: list[dict[str, Any]] | None
                         ) -> list[dict[str, Any]] | None:
        """The proxy chain's rules as nft lists them in its text syntax, in place of the JSON
        listing's (which drops `socket cgroupv2`'s level)."""
        if objects is None or not any(o.get("rule", {}).get("chain") == PROXY_CHAIN
                                      for o in objects):
            return objects
        text = self._text(f"list chain {FAMILY} {TABLE} {PROXY_CHAIN}",
                          f"list chain {FAMILY} {TABLE} {PROXY_CHAIN}")
        lines = text_chain_rules(text)
        out = [o for o in objects if o.get("rule", {}).get("chain") != PROXY_CHAIN]
        out += [{TEXT_RULE: {"chain": PROXY_CHAIN, "line": line}} for line in lines]
        return out

    def _write_text_rules(self, rules: list[dict[str, str]], what: str,
                          dry_run: bool = False) -> None:
        """The proxy chain made to hold exactly `rules`, in one transaction (the table and the
        chain it jumps to are added if missing: `add` leaves existing ones as they are)."""
        where = f"{FAMILY} {TABLE}"
        commands = [f"add table {where}", f"add chain {where} inbound",
                    f"add chain {where} {PROXY_CHAIN}", f"flush chain {where} {PROXY_CHAIN}"]
        commands += [f"add rule {where} {r['chain']} {r['line']}" for r in rules]
        self._text("\n".join(commands) + "\n", what, dry_run=dry_run)

    def detect(self) -> str:
        self.nft  # noqa: B018 - fails early, with the install hint, if the bindings are missing
        return f"nftables: fwsync's own table {FAMILY} {TABLE}, forward hook, priority -1"

    def _list_table(self) -> list[dict[str, Any]] | None:
        """The table's objects, or None when there is no table. A dormant table (someone's
        `nft add table inet fwsync { flags dormant; }`: the kernel runs none of its rules) is
        listed with a marker object, {"dormant": True}, that read() turns into drift."""
        netlink = inet_table_flags()
        if netlink is not None:
            # Asked of the kernel directly: libnftables 1.0.6's `list tables` prints another
            # program's owned table with flags of garbage, which broke its JSON now and then.
            if TABLE not in netlink:
                return None
            has_flags = bool(netlink[TABLE])
        else:
            tables = self._cmd([{"list": {"tables": {"family": FAMILY}}}], "list tables")
            ours = [o["table"] for o in tables.get("nftables", [])
                    if o.get("table", {}).get("name") == TABLE]
            if not ours:
                return None
            has_flags = bool(ours[0].get("flags"))
        dormant = False
        if has_flags:
            flags = self._table_flags()
            # fwsync makes its table without flags. One with `flags owner` (or `persist`)
            # belongs to another program, and libnftables 1.0.6 lists it as broken JSON (and
            # later crashed here); `dormant` is fwsync's table switched off.
            if flags != {"dormant"}:
                raise BackendError(f"table {FAMILY} {TABLE} was made by another program "
                                   f"(flags: {', '.join(sorted(flags)) or '?'}), not by "
                                   "fwsync; it is left alone")
            dormant = True
        out = self._cmd([{"list": {"table": {"family": FAMILY, "name": TABLE}}}],
                        f"list table {FAMILY} {TABLE}")
        objects = self._with_text_rules(
            [o for o in out.get("nftables", []) if "metainfo" not in o and "table" not in o])
        return [{"dormant": True}, *(objects or [])] if dormant else objects

    def _table_flags(self) -> set[str]:
        """The table's flags from nft's own text (libnftables 1.0.6 lists them in JSON as a
        garbage string); terse, so no set element is listed."""
        nft = self.nft
        nft.set_json_output(False)
        nft.set_terse_output(True)
        try:
            rc, output, _error = nft.cmd(f"list table {FAMILY} {TABLE}")
        finally:
            nft.set_terse_output(False)
            nft.set_json_output(True)
        if rc != 0:
            return set()
        for line in str(output).splitlines():
            words = line.split()
            if words[:1] == ["flags"]:
                return {f.strip(",") for f in words[1:]}
        return set()

    def _list_terse(self) -> list[dict[str, Any]] | None:
        """The table's objects with its sets' elements left out, or None when there is no
        table. libnftables 1.0.6 reads every element of every set for `list table` and `list
        tables`, terse or not (~0.5 s for a 100k-element set), but not for a terse `list
        ruleset`: that is one call whose cost does not grow with the sets."""
        tables = inet_table_flags()
        if tables is None or any(tables.values()):
            # A table with flags (`owner`: another program's, or one made to look like
            # fwsync's) is one libnftables 1.0.6 lists as broken JSON, or crashes on, in `list
            # ruleset`: the full listing names only the tables it must (and refuses an owned
            # `inet fwsync` in one line).
            return self._list_table()
        if TABLE not in tables:
            return None
        nft = self.nft
        nft.set_terse_output(True)
        try:
            out = self._cmd([{"list": {"ruleset": {"family": FAMILY}}}], "list ruleset")
        finally:
            nft.set_terse_output(False)
        objects = out.get("nftables", [])
        ours = [o["table"] for o in objects
                if "table" in o and o["table"].get("name") == TABLE]
        if not ours:
            return None
        if ours[0].get("flags"):
            return self._list_table()  # says whose it is, in one line
        return self._with_text_rules(
            [o for o in objects if "metainfo" not in o and "table" not in o
             and next(iter(o.values())).get("table") == TABLE])

    def _set(self, name: str) -> dict[str, Any]:
        """One set with its elements (`list set` reads only that set's)."""
        out = self._cmd([{"list": {"set": {"family": FAMILY, "table": TABLE, "name": name}}}],
                        f"list set {FAMILY} {TABLE} {name}")
        return next(o for o in out.get("nftables", []) if "set" in o)

    def read(self, desired: State | None = None) -> State:
        # A full read too starts from the terse listing and then lists each set once:
        # libnftables' `list table` fetches every element twice over (~2 s of CPU at 100k).
        objects = self._list_terse()
        # What apply() needs to know of the kernel, as of this read: make_plan reads just
        # before apply, under fwsync's lock.
        self._seen = seen_of(objects)
        self._seen_fresh = True
        self._proxy_held = text_rules(objects or [])
        if objects is None:
            return {}
        if desired is None:
            desired = {}  # trust nothing: every set is listed below
        replacing = replaced_by(desired)
        trusted: list[str] = []
        unlisted: list[str] = []
        complete: list[dict[str, Any]] = []
        for o in objects:
            key = set_key(o["set"]["name"], o["set"]["type"]) if "set" in o else None
            if key is None or is_meter(o) or "dynamic" in o["set"].get("flags", []) \
                    or "elem" in o["set"]:  # a meter, or listed already (the full listing)
                complete.append(o)
            elif key in desired and len(desired[key]) >= LIST_BELOW \
                    and self._count_agrees(o["set"], desired[key]):
                # Its name is the digest of its content (table_objects), desired has that
                # name, and the kernel holds as many elements as that content makes: the same
                # set. A hand edit that keeps the count is what a full read (desired=None) is
                # for; one that does not (`nft delete element`) makes it be listed below.
                trusted.append(key)
                complete.append(o)
            elif key not in desired and content_base(o["set"]) in replacing:
                # A set nothing desires, of a define whose new content (LIST_BELOW elements
                # or more) is a new set: the plan deletes it whole and apply deletes it by
                # name. Listing it would only print its elements (~1.2 s of CPU for 100k).
                unlisted.append(key)
                complete.append(o)
            else:
                complete.append(self._set(o["set"]["name"]))
        state = dict(objects_state(complete))
        state.update((key, desired[key]) for key in trusted)
        state.update((key, (NOT_LISTED,)) for key in unlisted)
        self._release(sum(len(s) for key, s in state.items()
                          if key not in trusted and key not in unlisted and " set " in key))
        return state

    def _count_agrees(self, s: dict[str, Any], elements: tuple[str, ...]) -> bool:
        """The kernel holds as many elements in set `s` as fwsync writes for `elements`
        (nft_counts). A set of COUNT_BELOW elements or more, or where netlink cannot be asked,
        is trusted by its name alone, as before: counting it costs more than a drift tick may."""
        if len(elements) >= COUNT_BELOW:
            return True
        held = element_count(TABLE, s["name"])
        if held is None:
            return True
        name = s["name"]
        if name not in self._expected:
            if len(self._expected) > 64:
                self._expected.clear()
            self._expected[name] = kernel_elements(elements, s["type"],
                                                   "interval" in s.get("flags", []))
        return held == self._expected[name]

    def _release(self, elements: int) -> None:
        """Let go of libnftables' context after `elements` set elements were listed or
        written: it keeps them in a cache (tens of MB for a 100k-element set), which a
        long-running daemon would otherwise keep for nothing. The next call makes a new one
        (~0.2 ms). Not for a few: freeing a context closes its netlink socket, which waits for
        nf_tables to destroy what the last transaction removed (cProfile of 40 flush repairs:
        0.449 s in 80 nft_ctx_free, ~5.6 ms each, twice in every repair; netlink.py's kept
        dump socket is the same wait)."""
        if elements >= RELEASE_ABOVE:
            self._nft = None

    def decided(self) -> tuple[Decided, ...]:
        """The inbound chain's counted decisions, from the terse listing: no set element is
        read (a `list chain` would fetch every one: 0.24-0.63 s with 100k of them)."""
        return decided(self._list_terse() or [])

    def holds(self) -> bool:
        return bool(self._list_terse())

    def enforcement(self) -> Enforcement:
        objects = self._list_terse() or []  # chains and rules: no set elements needed
        dormant = any("dormant" in o for o in objects)
        rules = [o["rule"] for o in objects if "rule" in o]
        rules_present = any(r["chain"] == "inbound" for r in rules)

        def base(name: str) -> NftBaseChain | None:
            # hook, priority and policy as the kernel lists them, for both base chains.
            listed = next((o["chain"] for o in objects
                           if o.get("chain", {}).get("name") == name), None)
            if listed is None:
                return None
            own = [r for r in rules if r["chain"] == name]
            return NftBaseChain(
                hook=listed.get("hook"), priority=listed.get("prio"),
                policy=listed.get("policy"),
                jumps_to_rules=any(e.get("jump", {}).get("target") == "inbound"
                                   for r in own for e in r["expr"]),
                rules_present=rules_present, dormant=dormant, holds_rules=bool(own))

        catchall = any(e.get("jump", {}).get("target") == PROXY_CHAIN
                       for r in rules if r["chain"] == "input" for e in r["expr"]) and any(
            has_proxy_catchall(r["line"]) for r in text_rules(objects))
        return Enforcement(self.name, nftables_reach(base("forward"), base("input")),
                           proxy_catchall=catchall)

    def render(self, ruleset: Ruleset) -> Desired:
        # The lines are for the diff and for people; apply writes the JSON objects, which the
        # Plan carries along (Desired.payload).
        objects = table_objects(ruleset)
        return Desired(objects_state(objects), objects)

    def snapshot(self) -> Desired:
        objects = self._list_table()
        self._seen = seen_of(objects)
        self._seen_fresh = True
        if objects is None:
            return Desired({}, writable_objects([]))
        return Desired(objects_state(objects), writable_objects(objects))

    @staticmethod
    def _objects_for(plan: Plan) -> Batch:
        if not isinstance(plan.payload, list):
            raise BackendError("internal: the plan carries no nftables objects to write (a "
                               "plan for this backend comes from its render() or snapshot())")
        return plan.payload

    def _kernel_table(self) -> tuple[bool, Seen]:
        """(the table exists, its sets and chains): from the last read, else asked now."""
        seen = self._seen if self._seen_fresh else seen_of(self._list_terse())
        self._seen_fresh = False  # one apply per read: a later apply asks again
        return (seen is not None, seen or Seen([], {}, {}))

    @staticmethod
    def _drifted(plan: Plan, objects: Batch) -> set[str]:
        """Sets that exist under their content name but hold something else (a hand edit)."""
        names = set_key_names(objects)
        return {names[c.key] for c in plan.changes if c.op == "update" and c.key in names}

    def check(self, plan: Plan) -> None:
        objects = self._objects_for(plan)
        # The read that planned it, if any (check does not use it up: apply may follow).
        seen = (self._seen if self._seen_fresh else seen_of(self._list_terse())) \
            or Seen([], {}, {})
        both = [*staging_batch(objects, seen.sets),
                *switch_batch(objects, seen.sets, self._drifted(plan, objects),
                              seen.chains, keep=self._kept(objects))[2:]]
        self._cmd(both, "dry run of the planned batch", dry_run=True)
        if text := text_rules(objects):
            self._write_text_rules(text, "dry run of the docker-proxy catch-all", dry_run=True)

    def apply(self, plan: Plan) -> None:
        table_existed, seen = self._kernel_table()
        # A rule written again keeps what it counted (status, the metrics).
        objects = carried(self._objects_for(plan), seen.counters)
        existing = seen.sets
        staging = staging_batch(objects, existing)
        staged = [o["add"]["set"]["name"] for o in staging if "set" in o.get("add", {})]
        nothing = "nothing was changed (the batch is all or nothing)"
        text = text_rules(objects)
        held_text = self._proxy_held
        # The proxy chain first, and only when it changes: the switch below leaves it as it is
        # (keep), so an apply that does not change it never has a moment without it.
        rewrite = bool(text) and (PROXY_CHAIN not in seen.chains or any(
            c.key == chain_key(PROXY_CHAIN) for c in plan.changes))
        if rewrite:
            try:
                self._write_text_rules(text, f"writing {FAMILY} {TABLE} {PROXY_CHAIN}")
            except BackendError as exc:
                raise BackendError(f"{exc}; {nothing}") from exc
        try:
            self._apply_json(objects, table_existed, seen, staged, staging, plan, nothing)
        except BackendError:
            if rewrite and table_existed:
                with contextlib.suppress(BackendError):  # the error below says what failed
                    self._write_text_rules(held_text, "putting the proxy chain back")
            raise

    def _kept(self, objects: Batch) -> tuple[str, ...]:
        return (PROXY_CHAIN,) if text_rules(objects) else ()

    def _apply_json(self, objects: Batch, table_existed: bool, seen: Seen, staged: list[str],
                    staging: Batch, plan: Plan, nothing: str) -> None:
        existing = seen.sets
        if staged or not table_existed:
            try:
                self._cmd(staging, f"creating the new sets in {FAMILY} {TABLE}")
            except BackendError as exc:
                raise BackendError(f"{exc}; {nothing}") from exc
        try:
            self._cmd(switch_batch(objects, existing, self._drifted(plan, objects),
                                   seen.chains, keep=self._kept(objects)),
                      f"replacing the rules of {FAMILY} {TABLE}")
        except BackendError as exc:
            if table_existed and not staged:
                raise BackendError(f"{exc}; {nothing}") from exc
            try:
                self._cmd(cleanup_batch(staged, table_existed), "removing the unused new sets")
            except BackendError as undo:
                raise BackendError(f"{exc}; the rules were not changed, but new unused sets "
                                   f"are left in the table ({undo})") from exc
            raise BackendError(f"{exc}; {nothing}") from exc
        self._release(sum(len(o["set"].get("elem") or ()) for o in objects if "set" in o))

    def remove(self) -> State:
        """The table goes in one transaction, without listing it first: libnftables fetches
        every set element for `list table`, `list tables` and `list sets` alike (with a
        250k-element set ~10 s each; `remove` of a million took minutes), `list chains` not."""
        tables = inet_table_flags()
        if tables is not None and TABLE not in tables:
            return {}
        listed = self._cmd([{"list": {"chains": {"family": FAMILY}}}], f"list chains {FAMILY}")
        chains = [o["chain"]["name"] for o in listed.get("nftables", [])
                  if o.get("chain", {}).get("table") == TABLE]
        # Adding the table first makes the delete a no-op when there is none; a table another
        # program owns (`flags owner`) is refused by the kernel itself.
        self._cmd(delete_batch(), f"deleting table {FAMILY} {TABLE}")
        if tables is None and not chains:
            return {}  # no netlink answer, and no chain of fwsync's: nothing was there
        return {key: () for key in (*(chain_key(c) for c in chains), TABLE_KEY)}
