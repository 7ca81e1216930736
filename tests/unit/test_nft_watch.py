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
    DELSETELEM,
    NEWGEN,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFPROTO_IPV4,
    Transactions,
    changes_in,
)

pytestmark = pytest.mark.unit
NEWRULE, DELCHAIN = 6, 5
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
    assert change.pid == STRANGER and not change.elements and change.at == 1.0


def test_iptables_nft_filter_table_is_watched_and_other_tables_are_not() -> None:
    assert changes_in(on(DELCHAIN, NFPROTO_IPV4, "filter") + gen(STRANGER), Transactions(),
                      0, 0)
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
