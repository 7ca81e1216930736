"""Drift heard when it happens: nf_tables announces every committed change of the ruleset on the
netfilter netlink group NFNLGRP_NFTABLES — `nft` and libnftables, and iptables-nft's
(`iptables -F`, `iptables-restore`, Docker's own rules), which are nf_tables changes too. The
daemon listens. A change to fwsync's own objects (its table `inet fwsync`; its chains FWSYNC-*
in the `ip`/`ip6 filter` tables of iptables-nft) is drift: it is repaired at once, the
reconcile's own read and diff being the check. A change to a chain fwsync's jumps are in
(FORWARD, DOCKER-USER, INPUT: Docker edits them too) starts a drift check at once, and a repair
if it finds drift. Changes elsewhere (Docker's own chains, other tables) are no news. All of
this instead of waiting for the next drift tick; ipsets and iptables-legacy announce nothing:
they stay on the tick.

Each transaction ends with an NFT_MSG_NEWGEN message that names the process that committed it
(NFTA_GEN_PROC_PID). A transaction of the daemon's own (libnftables runs in this process; the
iptables tools are its children) is not news: it is dropped here, so a repair does not make
another check. One that cannot be told apart (a child that has already exited) costs one
cheap check that finds nothing; a check never writes unless the kernel differs from what was
enforced, so nothing can loop. (The kernel names the process by its pid in the initial pid
namespace: a daemon in a pid namespace of its own does not recognise its writes, and pays one
reconcile that changes nothing after each.) A transaction that added or deleted an element of one of
fwsync's sets asks for a full check: such an edit is invisible to the cheap one.

Spoken over a raw socket, as fwsync/backends/netlink.py does, not through pyroute2: only the
message types, the table name and the NEWGEN's pid are needed. pyroute2 0.9.7's NFTSocket can
subscribe to the group (`bind(groups=1 << 6)`, tried), but it is no dependency of fwsync any
more, imports in 0.16-0.29 s, and decodes every attribute of every message in Python, where
an apply of a big set announces each element. Measured in a namespace (one `nft -f` adding a
set of N addresses, the listener draining the announcements; CPU time): this module 10k
elements 0.038 s, 50k 0.23 s (two passes over each datagram: ~2 µs a message); pyroute2 10k
0.14 s, 50k 0.80 s (~29 µs a message), and it received only half of them (5,005 of 10,003,
25,025 of 50,003: its socket buffer overflowed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from fwsync.backends.iptables_render import INPUT_ENTRY, OWN_CHAINS
from fwsync.backends.netlink import HEADER, NETLINK_NETFILTER, NFGEN, NLMSG_ERROR, attrs, cstring

log = logging.getLogger("fwsync.daemon")

NFNLGRP_NFTABLES = 7
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1
NFNL_SUBSYS_NFTABLES = 10
# nf_tables_msg_types
NEWTABLE, DELTABLE = 0, 2
NEWCHAIN, DELCHAIN, NEWRULE, DELRULE = 3, 5, 6, 8
NEWSETELEM, DELSETELEM = 12, 14
NEWGEN = 15
NFTA_GEN_PROC_PID = 2
# The table attribute is the first of every message type that has one (NFTA_*_TABLE = 1;
# a table's own name is NFTA_TABLE_NAME = 1).
NFTA_TABLE = 1
NFTA_RULE_CHAIN, NFTA_CHAIN_NAME = 2, 3
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
# Where fwsync's objects are: its own table, and the filter tables iptables-nft writes.
OWN_TABLE = (NFPROTO_INET, "fwsync")
FILTER = {(NFPROTO_IPV4, "filter"), (NFPROTO_IPV6, "filter")}
ENTRY_CHAINS = {"FORWARD", "DOCKER-USER", INPUT_ENTRY}
RCVBUF = 8 << 20  # an apply of a big set announces every element: room for bursts


@dataclass(frozen=True)
class Change:
    """One committed transaction of another process that touched a watched table."""

    at: float  # time.monotonic() when it was heard
    wall: float
    elements: bool  # an element of a set was added or deleted: only a full check sees that
    pid: int  # who committed it (0: unknown)
    own: bool = False  # it changed fwsync's own objects: drift, no check needed to say so
    lost: bool = False  # the socket overflowed: what was missed is unknown


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # pid (comm) state ppid ...: comm may hold spaces and parentheses; it ends at the last ')'.
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def is_own(pid: int, me: int | None = None) -> bool:
    """The transaction was committed by this process or one of its children."""
    me = os.getpid() if me is None else me
    return pid == me or (pid > 0 and _ppid(pid) == me)


class Transactions:
    """Messages of the group, in order, → one Change per transaction of another process that
    touched fwsync's objects or the chains its jumps are in (pure, apart from the /proc
    look-up of is_own)."""

    def __init__(self, me: int | None = None) -> None:
        self.me = os.getpid() if me is None else me
        self._own = self._entry = self._elements = False

    def _note(self, msg: int, family: int, found: dict[int, bytes]) -> None:
        if NFTA_TABLE not in found:
            return
        table = (family, cstring(found[NFTA_TABLE]))
        if table == OWN_TABLE:
            self._own = True
            self._elements |= msg in (NEWSETELEM, DELSETELEM)
            return
        if table not in FILTER:
            return
        attr = {NEWRULE: NFTA_RULE_CHAIN, DELRULE: NFTA_RULE_CHAIN, NEWCHAIN: NFTA_CHAIN_NAME,
                DELCHAIN: NFTA_CHAIN_NAME}.get(msg)
        chain = cstring(found[attr]) if attr is not None and attr in found else None
        if chain in OWN_CHAINS:
            self._own = True
        elif chain is None or chain in ENTRY_CHAINS:  # the table itself, a set, a jump's chain
            self._entry = True

    def feed(self, kind: int, family: int, found: dict[int, bytes]) -> Change | None:
        """One message. At the end of a transaction (NEWGEN) that touched what is watched and
        was not this process's: the Change (its times left for the caller); else None."""
        subsys, msg = kind >> 8, kind & 0xFF
        if subsys != NFNL_SUBSYS_NFTABLES:
            return None
        if msg != NEWGEN:
            self._note(msg, family, found)
            return None
        own, entry, elements = self._own, self._entry, self._elements
        self._own = self._entry = self._elements = False
        raw = found.get(NFTA_GEN_PROC_PID, b"")
        pid = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else 0
        if not (own or entry) or is_own(pid, self.me):
            return None
        return Change(0.0, 0.0, elements, pid, own=own)


def parse(data: bytes, on_message: Callable[[int, int, dict[int, bytes]], None]) -> None:
    """Each message of one datagram: (type, nfgen family, attributes)."""
    pos = 0
    while pos + HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = HEADER.unpack_from(data, pos)
        if length < HEADER.size:
            return
        if kind != NLMSG_ERROR and length >= HEADER.size + NFGEN.size:
            family = data[pos + HEADER.size]
            on_message(kind, family, attrs(data, pos + HEADER.size + NFGEN.size, pos + length))
        pos += (length + 3) & ~3


def changes_in(data: bytes, tx: Transactions, heard: float, wall: float) -> list[Change]:
    """The foreign transactions on watched tables that one datagram completes."""
    changes: list[Change] = []

    def take(kind: int, family: int, found: dict[int, bytes]) -> None:
        ended = tx.feed(kind, family, found)
        if ended is not None:
            changes.append(replace(ended, at=heard, wall=wall))

    try:
        parse(data, take)
    except (struct.error, ValueError, IndexError):
        changes.append(Change(heard, wall, True, 0, lost=True))
    return changes


def subscribe() -> socket.socket:
    """A socket on NFNLGRP_NFTABLES in this network namespace (OSError if it cannot be)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        with contextlib.suppress(OSError):  # root may go past net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
    except OSError:
        sock.close()
        raise
    return sock


class NftWatcher:
    """A thread that hears nf_tables' announcements and hands each foreign transaction on a
    watched table to `on_change` (called on this thread: hand it over to the loop)."""

    def __init__(self, on_change: Callable[[Change], None]) -> None:
        self.on_change = on_change
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> bool:
        """False (and a warning) when netlink cannot be listened to here: the tick remains."""
        try:
            self._sock = subscribe()
        except OSError as exc:
            log.warning("cannot listen to nf_tables' changes (%s): drift is found by the "
                        "tick only", exc)
            return False
        self._sock.settimeout(0.5)  # to notice stop()
        self._thread = threading.Thread(target=self._run, name="nft-watch", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        tx = Transactions()
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: messages were dropped; what changed is unknown
                    tx = Transactions()
                    self.on_change(Change(time.monotonic(), time.time(), True, 0, lost=True))
                    continue
                if self._stop.is_set():
                    return
                log.warning("listening to nf_tables' changes failed (%s): drift is found by "
                            "the tick only", exc)
                return
            for change in changes_in(data, tx, time.monotonic(), time.time()):
                self.on_change(change)
