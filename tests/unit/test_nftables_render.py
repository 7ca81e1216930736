"""nftables rendering is pure: the table's objects compared with a reviewed golden file
(refresh with FWSYNC_UPDATE_GOLDEN=1), and the JSON → lines formatting both sides share."""

import json
import os
from pathlib import Path

import pytest

from fwsync.backends.nftables_render import (
    objects_state,
    render,
    replace_batch,
    table_objects,
)
from fwsync.core.build import build_ruleset
from fwsync.core.observed import DockerState
from fwsync.reconcile import choose_backend

from .helpers import policy
from .test_iptables_render import DOCKER, POLICY

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent.parent / "golden"


def test_render_matches_golden():
    state = render(build_ruleset(POLICY, DOCKER).ruleset)
    text = "".join(f"[{key}]\n" + "".join(f"{line}\n" for line in lines)
                   for key, lines in sorted(state.items()))
    path = GOLDEN / "nftables.txt"
    if os.environ.get("FWSYNC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_batch_replaces_the_whole_table_in_one_transaction():
    batch = replace_batch(table_objects(build_ruleset(POLICY, DOCKER).ruleset), ["old_v4"])
    assert batch[0] == {"metainfo": {"json_schema_version": 1}}
    table = {"table": {"family": "inet", "name": "fwsync"}}
    # add-then-flush is safe when the table is absent; the old sets go; all in one batch.
    old = {"delete": {"set": {"family": "inet", "table": "fwsync", "name": "old_v4"}}}
    assert batch[1:5] == [{"add": table}, {"flush": table}, old, {"add": table}]
    kinds = [next(iter(op["add"])) for op in batch[4:]]
    assert kinds.index("rule") > max(i for i, k in enumerate(kinds) if k == "set"), \
        "sets exist before the rules that use them"
    chain = next(op["add"]["chain"] for op in batch[4:] if "hook" in op["add"].get("chain", {}))
    assert chain["prio"] == -1 and isinstance(chain["prio"], int)


def test_rules_without_addresses_serve_both_families_once():
    state = render(build_ruleset(policy(), DockerState()).ruleset)
    inbound = state["inet fwsync chain inbound"]
    assert inbound[-1] == 'drop comment "10-test.rules:1 default deny"'
    assert sum("default" in line for line in inbound) == 1


def test_listing_shapes_format_like_rendered_ones():
    # As libnftables 1.0.6 lists them: elements with options, handles, extra keys.
    listed = [
        {"set": {"family": "inet", "name": "x_v4", "table": "fwsync", "type": "ipv4_addr",
                 "handle": 3, "flags": ["interval"],
                 "elem": [{"prefix": {"addr": "198.51.100.0", "len": 25}}, "203.0.113.7"]}},
        {"chain": {"family": "inet", "table": "fwsync", "name": "inbound", "handle": 2}},
        {"rule": {"family": "inet", "table": "fwsync", "chain": "inbound", "handle": 9,
                  "expr": json.loads('[{"match": {"op": "!=", "left": {"&": [{"ct": {"key": '
                                     '"status"}}, "dnat"]}, "right": "dnat"}}, '
                                     '{"drop": null}]')}},
    ]
    assert objects_state(listed) == {
        "inet fwsync set x_v4 (ipv4_addr)": ("198.51.100.0/25", "203.0.113.7"),
        "inet fwsync chain inbound": ("regular chain", "ct status & dnat != dnat drop"),
    }


def test_auto_follows_what_docker_reports():
    backend, why = choose_backend("auto", DockerState(firewall_backend="nftables"))
    assert backend.name == "nftables" and "nftables" in why
    backend, why = choose_backend("auto", DockerState(firewall_backend="iptables"))
    assert backend.name == "iptables"
    backend, why = choose_backend("auto", DockerState(version="20.10.24"))
    assert backend.name == "iptables" and "20.10.24" in why
    assert choose_backend("nftables", DockerState(firewall_backend="iptables"))[0].name == \
        "nftables"
