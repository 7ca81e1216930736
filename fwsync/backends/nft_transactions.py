"""The transactions that write fwsync's nftables table: what an apply sends to libnftables, in
two batches (staging_batch, then switch_batch), what undoes a failed one, and what removes the
table. Pure: each builds a batch, nftables.py sends it.

Apart from the rules because they are made from the table's objects, whatever made them: the
rendered ones, or the ones the kernel listed and an apply writes back (writable_objects).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from fwsync.backends.nft_sets import set_names
from fwsync.backends.nft_table import FAMILY, TABLE, TEXT_RULE, Batch, in_table


def writable_objects(listed: Batch) -> Batch:
    """The table as the kernel lists it (`list table`, without its table object) → objects an
    apply writes back as they were: what table_objects would have rendered for them. Handles
    go, and so does the traffic's per-source state in a limit's set."""
    objects: Batch = [{"table": {"family": FAMILY, "name": TABLE}}]
    for obj in listed:
        ((kind, body),) = obj.items()
        if kind not in ("set", "chain", "rule", TEXT_RULE):  # and the dormant marker:
            continue  # apply wakes it
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "set" and is_meter({"set": body}):
            body.pop("elem", None)
            body["flags"] = [f for f in body.get("flags", []) if f != "dynamic"]
        objects.append({kind: body})
    return objects


def text_rules(objects: Batch) -> list[dict[str, str]]:
    """The rules written in nft's text syntax (nft_table.TEXT_RULE), in order."""
    return [o[TEXT_RULE] for o in objects if TEXT_RULE in o]


def text_chain_rules(listing: str) -> list[str]:
    """`nft list chain` (text, no handles) → the chain's rules, one line each, as listed."""
    lines = [line.strip() for line in listing.splitlines()]
    inside = [line for line in lines if line and not line.startswith(("table ", "chain "))
              and line != "}" and not line.startswith(("type ", "policy "))]
    return inside


def _head() -> Batch:
    return [{"metainfo": {"json_schema_version": 1}},
            {"add": {"table": {"family": FAMILY, "name": TABLE}}}]


def staging_batch(objects: Batch, existing_sets: Collection[str]) -> Batch:
    """The first of an apply's two transactions: the sets that do not exist yet, with their
    elements, and nothing that uses them, so packets see no change.

    Why not one transaction: the kernel makes a new generation of rules visible before it has
    finished publishing the elements of sets created in the same transaction, so a packet can
    meet a new rule whose new set still looks empty. The atomicity test saw about one lost
    connection in 10k while the table was replaced with rules that point at new sets, and none
    once the sets were created (and committed) before the rules that use them."""
    return [*_head(), *({"add": o} for o in objects if "set" in o and not is_meter(o)
                        and o["set"]["name"] not in existing_sets)]


def is_meter(obj: dict[str, Any]) -> bool:
    """A limit's per-source set. It must be created in the same transaction as the rule that
    updates it from the packet path (libnftables then marks it dynamic); it starts empty, so
    there is nothing whose publication a packet could overtake."""
    return "timeout" in obj["set"].get("flags", [])


ChainHead = tuple[Any, Any, Any]  # (type, hook, prio); all None for a regular chain


def chain_head(chain: dict[str, Any]) -> ChainHead:
    return chain.get("type"), chain.get("hook"), chain.get("prio")


def chain_heads(objects: Batch) -> dict[str, ChainHead]:
    return {o["chain"]["name"]: chain_head(o["chain"]) for o in objects if "chain" in o}


def switch_batch(objects: Batch, existing_sets: Collection[str],
                 rebuild: Collection[str] = (),
                 existing_chains: Mapping[str, ChainHead] | None = None,
                 keep: Collection[str] = ()) -> Batch:
    """The second transaction, the one packets notice: every rule is replaced at once, and the
    sets nothing uses any more go. `rebuild` names sets that exist but were edited by hand
    (drift): they are emptied and refilled here. Chains of the table that fwsync does not
    want (a hand-made one), or whose hook, type or priority is not fwsync's (a base chain
    re-made to run after Docker's), go too, and fwsync's are made anew; a chain's policy is
    put right by `add` itself. The table itself is added without flags, which also wakes it
    if someone made it dormant. The chains in `keep` (the proxy chain, written apart) keep
    their rules: the others are flushed one by one instead of the table at once."""
    wanted = set(set_names(objects))
    table = {"table": {"family": FAMILY, "name": TABLE}}
    if keep:
        batch = [*_head(), *({"flush": {"chain": {**in_table(), "name": name}}}
                             for name in (existing_chains or {}) if name not in keep)]
    else:
        batch = [*_head(), {"flush": table}]  # flushes rules; sets and chains stay
    heads = chain_heads(objects)
    batch += [{"delete": {"chain": {**in_table(), "name": name}}}
              for name, head in (existing_chains or {}).items() if heads.get(name) != head]
    batch += [{"delete": {"set": {**in_table(), "name": n}}}
              for n in existing_sets if n not in wanted]
    for o in objects:
        if "set" in o and o["set"]["name"] in rebuild:
            batch.append({"flush": {"set": {**in_table(), "name": o["set"]["name"]}}})
            if o["set"].get("elem"):
                batch.append({"add": {"element": {**in_table(), "name": o["set"]["name"],
                                                  "elem": o["set"]["elem"]}}})
    batch += [{"add": o} for o in objects if "set" in o and is_meter(o)
              and o["set"]["name"] not in existing_sets]
    batch += [{"add": o} for o in objects
              if "set" not in o and "table" not in o and TEXT_RULE not in o]
    return batch


def cleanup_batch(staged: Collection[str], table_existed: bool) -> Batch:
    """Undo a staging transaction whose switch failed: the kernel is left as it was."""
    if not table_existed:
        return delete_batch()
    return [*_head(), *({"delete": {"set": {**in_table(), "name": n}}} for n in staged)]


def delete_batch() -> Batch:
    table = {"table": {"family": FAMILY, "name": TABLE}}
    return [{"metainfo": {"json_schema_version": 1}}, {"add": table}, {"delete": table}]
