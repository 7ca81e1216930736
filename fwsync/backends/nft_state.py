"""fwsync's nftables table as state: its objects as JSON (rendered, or as the kernel lists them)
→ named objects of readable lines, the one form `plan`, `status`, drift detection and the
verifier (fwsync/verify, which reads these lines) compare. Pure.

Apart from the rules because it is the same function for both sides of every comparison: it
must not know how a rule was made, only how nftables lists one.
"""

from __future__ import annotations

import json
from typing import Any

from fwsync.backends.nft_table import FAMILY, TABLE, TEXT_RULE, Batch

TABLE_KEY = f"{FAMILY} {TABLE} table"


def chain_key(chain: str) -> str:
    return f"{FAMILY} {TABLE} chain {chain}"


def set_key(name: str, kind: str) -> str:
    return f"{FAMILY} {TABLE} set {name} ({kind})"


def set_object_key(s: dict[str, Any]) -> str:
    """A set's state key (objects_state's), from its name and type: no element is looked at."""
    if _per_source(s):
        return set_key(s["name"], f"{s['type']}, per-source limit")
    return set_key(s["name"], s["type"])


def _per_source(s: dict[str, Any]) -> bool:
    """A limit's set of per-source state, as rendered (timeout) or as listed (dynamic)."""
    return "timeout" in s.get("flags", []) or "dynamic" in s.get("flags", [])


def set_key_names(objects: Batch) -> dict[str, str]:
    """State key → kernel name, for the sets among these objects."""
    return {set_object_key(o["set"]): o["set"]["name"] for o in objects if "set" in o}


def _fmt(e: Any) -> str:
    if isinstance(e, str | int):
        return str(e)
    if isinstance(e, list):
        return "{ " + ", ".join(_fmt(x) for x in e) + " }"
    if not isinstance(e, dict) or len(e) != 1:
        return json.dumps(e, sort_keys=True)
    (kind, v), = e.items()
    if kind == "match":
        op = "" if v["op"] in ("==", "in") else f"{v['op']} "
        return f"{_fmt(v['left'])} {op}{_fmt(v['right'])}"
    if kind == "meta":
        return f"meta {v['key']}"
    if kind == "ct":
        return f"ct {v['dir'] + ' ' if 'dir' in v else ''}{v['key']}"
    if kind == "payload":
        return f"{v['protocol']} {v['field']}"
    if kind == "fib":
        flags = v.get("flags", [])
        return f"fib {' . '.join([flags] if isinstance(flags, str) else flags)} {v['result']}"
    if kind == "prefix":
        return f"{v['addr']}/{v['len']}"
    if kind == "range":
        return f"{_fmt(v[0])}-{_fmt(v[1])}"
    if kind == "&":
        return " & ".join(_fmt(x) for x in v)
    if kind == "set" and isinstance(v, list):
        return _fmt(v)
    if kind == "log":
        group = f" group {v['group']}" if "group" in v else ""
        return f'log prefix "{v.get("prefix", "")}"{group}'
    if kind == "counter":
        return "counter"  # its values are traffic's, not the rule's: never a difference
    if kind in ("accept", "drop", "return") and v is None:
        return str(kind)
    if kind == "jump":
        return f"jump {v['target']!s}"
    if kind == "reject":
        return f"reject with {v.get('type')}" + (f" {v['expr']}" if "expr" in v else "")
    if kind == "set" and isinstance(v, dict):
        inner = " ".join([_fmt(v["elem"]), *(_fmt(s) for s in v.get("stmt", []))])
        return f"{v['op']} {v['set']} {{ {inner} }}"
    if kind == "limit":
        over = "over " if v.get("inv") else ""
        return f"limit rate {over}{v['rate']}/{v.get('per', 'second')} burst {v.get('burst', 0)}"
    return json.dumps(e, sort_keys=True)


def rule_line(rule: dict[str, Any]) -> str:
    text = " ".join(_fmt(e) for e in rule["expr"])
    return text + (f' comment "{rule["comment"]}"' if rule.get("comment") else "")


def objects_state(objects: Batch) -> dict[str, tuple[str, ...]]:
    """Table objects (rendered, or as the kernel lists them) → named objects of lines."""
    state: dict[str, list[str]] = {}
    for obj in objects:
        if "dormant" in obj:  # the backend's marker: no such object is ever rendered
            state[TABLE_KEY] = ["flags dormant: the kernel runs none of the table's rules"]
        elif "chain" in obj:
            c = obj["chain"]
            head = (f"hook {c['hook']} priority {c.get('prio')} policy {c.get('policy')}"
                    if "hook" in c else "regular chain")
            state.setdefault(chain_key(c["name"]), []).insert(0, head)
        elif TEXT_RULE in obj:  # the proxy chain's rules, as nft's text syntax lists them
            state.setdefault(chain_key(obj[TEXT_RULE]["chain"]), []).append(
                obj[TEXT_RULE]["line"])
        elif "rule" in obj:
            state.setdefault(chain_key(obj["rule"]["chain"]), []).append(rule_line(obj["rule"]))
        elif "set" in obj:
            s = obj["set"]
            if _per_source(s):
                # A limit's per-source state: its elements come and go with traffic.
                state[set_key(s["name"], f"{s['type']}, per-source limit")] = []
            else:
                # A hash set's elements are plain strings already (100k of them at times).
                elems = [e if e.__class__ is str else _elem_text(e) for e in s.get("elem", [])]
                elems.sort()
                state[set_key(s["name"], s["type"])] = elems
    return {k: tuple(v) for k, v in state.items()}


def _elem_text(e: Any) -> str:
    if isinstance(e, dict) and "prefix" in e:
        # Both sides hold canonical text here (the kernel lists it so, and nft_sets renders
        # from collapsed networks): no need to parse 10k addresses again.
        return f"{e['prefix']['addr']}/{e['prefix']['len']}"
    if isinstance(e, dict) and "range" in e:
        return "-".join(str(x) for x in e["range"])
    if isinstance(e, dict) and "elem" in e:
        return _elem_text(e["elem"]["val"])  # an element with options (timeout)
    return str(e)
