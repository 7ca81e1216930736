"""nf_tables' announcements → the transactions the daemon checks (daemon/nft_watch.py): built
from the messages the kernel sends on NFNLGRP_NFTABLES (a table attribute first, a NEWGEN with
the committing pid last); the daemon's own are dropped, a set element edit asks for a full
check, other tables are no news."""

from __future__ import annotations

import os
import struct

import pytest

from fwsync.backends.netlink import HEADER, NFGEN, attr
from fwsync.daemon.nft_watch import (
    DELCHAIN,
    DELRULE,
    DELSETELEM,
    DELTABLE,
    NEWGEN,
    NEWRULE,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    Transactions,
    changes_in,
)

pytestmark = pytest.mark.unit
STRANGER = 1  # init: never this test's process nor its child


def message(msg: int, family: int, *attributes: bytes) -> bytes:
    body = NFGEN.pack(family, 0, 0) + b"".join(attributes)
    return HEADER.pack(HEADER.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, 0, 0, 0) + body


def on(msg: int, family: int, table: str) -> bytes:
    return message(msg, family, attr(1, table.encode() + b"\0"))


def gen(pid: int) -> bytes:
    return message(NEWGEN, 0, attr(1, struct.pack(">I", 7)), attr(2, struct.pack(">I", pid)))


def test_a_foreign_change_of_fwsyncs_table_is_news() -> None:
    [change] = changes_in(on(NEWRULE, NFPROTO_INET, "fwsync") + gen(STRANGER),
                          Transactions(), 1.0, 2.0)
    assert change.pid == STRANGER and change.own and not change.elements
    assert (change.at, change.wall) == (1.0, 2.0)


def rule_in(family: int, table: str, chain: str, msg: int = NEWRULE) -> bytes:
    return message(msg, family, attr(1, table.encode() + b"\0"),
                   attr(2 if msg in (NEWRULE, DELRULE) else 3, chain.encode() + b"\0"))


def test_iptables_nft_fwsyncs_chains_are_its_own_and_its_entries_are_checked() -> None:
    [own] = changes_in(rule_in(NFPROTO_IPV4, "filter", "FWSYNC-INBOUND", DELRULE)
                       + gen(STRANGER), Transactions(), 0, 0)
    assert own.own  # drift: repaired without a check first
    [entry] = changes_in(rule_in(NFPROTO_IPV6, "filter", "DOCKER-USER") + gen(STRANGER),
                         Transactions(), 0, 0)
    assert not entry.own  # Docker edits it too: checked first
    [table] = changes_in(on(DELTABLE, NFPROTO_IPV4, "filter") + gen(STRANGER),
                         Transactions(), 0, 0)
    assert not table.own
    # Docker's own chains, and other tables, are no news.
    assert changes_in(rule_in(NFPROTO_IPV4, "filter", "DOCKER-ISOLATION-STAGE-1")
                      + rule_in(NFPROTO_IPV4, "filter", "DOCKER", DELCHAIN) + gen(STRANGER),
                      Transactions(), 0, 0) == []
    assert changes_in(on(NEWRULE, NFPROTO_IPV4, "nat") + gen(STRANGER), Transactions(),
                      0, 0) == []
    assert changes_in(on(NEWRULE, NFPROTO_INET, "other") + gen(STRANGER), Transactions(),
                      0, 0) == []


def test_the_daemons_own_transactions_are_dropped() -> None:
    assert changes_in(on(NEWRULE, NFPROTO_INET, "fwsync") + gen(os.getpid()), Transactions(),
                      0, 0) == []


def test_a_set_element_edit_asks_for_a_full_check() -> None:
    [change] = changes_in(on(DELSETELEM, NFPROTO_INET, "fwsync") + gen(STRANGER),
                          Transactions(), 0, 0)
    assert change.elements


def test_a_transaction_split_over_datagrams_is_one_change() -> None:
    tx = Transactions()
    assert changes_in(on(DELSETELEM, NFPROTO_INET, "fwsync"), tx, 0, 0) == []
    [change] = changes_in(gen(STRANGER), tx, 0, 0)
    assert change.elements
    assert changes_in(gen(STRANGER), tx, 0, 0) == []  # the next one touched nothing
