"""What a log rule hands to an NFLOG group, read back with NflogReader (fwsync/observe/nflog.py):
real packets from a client namespace, dropped and logged in a router namespace that DNATs them
towards a server namespace, the reader running inside the router.

    client 198.51.100.10  2001:db8:1::10 ──veth── rc0 198.51.100.1  2001:db8:1::1   router
    server 203.0.113.20   2001:db8:2::20 ──veth── rs0 203.0.113.1   2001:db8:2::1

The connection's original destination (router:8080, before DNAT) comes only from the conntrack
entry the kernel attaches (NFULA_CT), which needs CONFIG_NETFILTER_NETLINK_GLUE_CT: where the
kernel has it the reader must get it, where it does not the reader must say so
(`conntrack` False) and leave `orig_dest` None."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab import (
    Netns,
    add_addr,
    default_route,
    probe,
    require,
    set_forwarding,
    unique_name,
    veth,
)

pytestmark = pytest.mark.kernel

GROUP = 77
CLIENT_V4, CLIENT_V6 = "198.51.100.10", "2001:db8:1::10"
ROUTER_V4, ROUTER_V6 = "198.51.100.1", "2001:db8:1::1"
ROUTER_SRV_V4, ROUTER_SRV_V6 = "203.0.113.1", "2001:db8:2::1"
SERVER_V4, SERVER_V6 = "203.0.113.20", "2001:db8:2::20"
ROUTER_CLIENT_IF, ROUTER_SERVER_IF = "rc0", "rs0"
REPO = str(Path(__file__).resolve().parents[2])

RULESET = f"""
table inet fwsync_nflog_test {{
    chain prerouting {{
        type nat hook prerouting priority dstnat;
        ip daddr {ROUTER_V4} tcp dport 8080 dnat ip to {SERVER_V4}:80
    }}
    chain forward {{
        type filter hook forward priority filter;
        ct status dnat log group {GROUP} prefix "fwsync test" drop
        meta nfproto ipv6 tcp dport 5432 log group {GROUP} prefix "v6" drop
        udp dport 9999 log group {GROUP} prefix "flood" drop
    }}
}}
"""

# Runs inside the router: one line when bound, then one line per record, until stdin closes.
_READER = r"""
import dataclasses, json, select, sys, time
sys.path.insert(0, sys.argv[1])
from fwsync.observe.nflog import NflogReader
with NflogReader(int(sys.argv[2])) as reader:
    print(json.dumps({"ready": True, "conntrack": reader.conntrack}), flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        for rec in reader.read(0.1):
            out = {k: v if v is None or isinstance(v, (int, float)) else str(v)
                   for k, v in dataclasses.asdict(rec).items()}
            print(json.dumps({**out, "received": time.time()}), flush=True)
    print(json.dumps({"lost": reader.lost, "overruns": reader.overruns}), flush=True)
"""

# Runs inside the router: bound, it reads nothing until told (a line on stdin), then drains;
# told again, it reads the next packet (which shows the gap the overrun left).
_SLOW = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from fwsync.observe.nflog import NflogReader
with NflogReader(int(sys.argv[2])) as reader:
    print(json.dumps({"ready": True}), flush=True)
    got = 0
    for first in (0.5, 5):  # the first read waits for the marker packet the second time
        sys.stdin.readline()
        wait = first
        while batch := reader.read(wait):
            got, wait = got + len(batch), 0.2
        print(json.dumps({"records": got, "lost": reader.lost, "overruns": reader.overruns}),
              flush=True)
"""

# Runs inside the client: UDP datagrams as fast as one socket sends them.
_FLOOD = r"""
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for _ in range(int(sys.argv[2])):
        s.sendto(b"x", (sys.argv[1], 9999))
"""

# Runs inside the router: a second socket asking for a group the first holds.
_TWICE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from fwsync.observe.nflog import NflogReader
with NflogReader(int(sys.argv[2])):
    try:
        NflogReader(int(sys.argv[2])).open()
    except OSError as exc:
        print(exc.errno, exc.strerror)
"""


def kernel_has_ct_glue() -> bool | None:
    """CONFIG_NETFILTER_NETLINK_GLUE_CT of the running kernel; None when its config is not
    readable here."""
    try:
        text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return None
    return "CONFIG_NETFILTER_NETLINK_GLUE_CT=y" in text.splitlines()


@dataclass
class Routed:
    client: Netns
    router: Netns
    server: Netns


@pytest.fixture
def routed() -> Iterator[Routed]:
    require("nft")
    made: list[Netns] = []
    try:
        for role in ("client", "router", "server"):
            made.append(Netns.create(unique_name(role)))
        client, router, server = made
        veth(client, "eth0", router, ROUTER_CLIENT_IF)
        veth(router, ROUTER_SERVER_IF, server, "eth0")
        for ns, ifname, addrs in (
                (client, "eth0", (CLIENT_V4 + "/24", CLIENT_V6 + "/64")),
                (router, ROUTER_CLIENT_IF, (ROUTER_V4 + "/24", ROUTER_V6 + "/64")),
                (router, ROUTER_SERVER_IF, (ROUTER_SRV_V4 + "/24", ROUTER_SRV_V6 + "/64")),
                (server, "eth0", (SERVER_V4 + "/24", SERVER_V6 + "/64"))):
            for cidr in addrs:
                add_addr(ns, ifname, cidr)
        default_route(client, ROUTER_V4, ROUTER_V6)
        default_route(server, ROUTER_SRV_V4, ROUTER_SRV_V6)
        set_forwarding(router, True)
        router.run(["nft", "-f", "-"], input=RULESET)
        yield Routed(client, router, server)
    finally:
        for ns in reversed(made):
            ns.delete()


class ReaderProc:
    """NflogReader for GROUP in a subprocess inside `ns`; records as JSON lines."""

    def __init__(self, ns: Netns) -> None:
        self.proc = ns.spawn([sys.executable, "-I", "-c", _READER, REPO, str(GROUP)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        self._buf = b""
        self.lines: list[dict[str, Any]] = []

    def _more(self, deadline: float) -> bool:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(max(0.0, deadline - time.monotonic())):
                return False
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return False
        self._buf += chunk
        *whole, self._buf = self._buf.split(b"\n")
        self.lines += [json.loads(line) for line in whole if line]
        return True

    def wait(self, pred: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if pred(line):
                    return line
            if time.monotonic() > deadline or not self._more(deadline):
                err = self.proc.stderr.read().decode() if self.proc.poll() is not None \
                    and self.proc.stderr else ""
                raise AssertionError(f"no {what} within {timeout}s: {self.lines} {err}")

    def stop(self) -> dict[str, Any]:
        """Close its stdin, and the last line: its lost/overrun counters."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by its pid: the process this test started
            self.proc.wait()
        assert self.proc.stdout is not None
        rest = self.proc.stdout.read()
        self.lines += [json.loads(line) for line in (self._buf + rest).split(b"\n") if line]
        return self.lines[-1]


@contextlib.contextmanager
def reader_in(ns: Netns) -> Iterator[ReaderProc]:
    reader = ReaderProc(ns)
    try:
        yield reader
    finally:
        if reader.proc.poll() is None:
            reader.stop()


def test_a_dnated_connection_is_logged_with_where_it_went_and_where_it_was_dialled(
        routed: Routed) -> None:
    with reader_in(routed.router) as reader:
        ready = reader.wait(lambda line: "ready" in line, 10, "ready line")
        glue = kernel_has_ct_glue()
        if glue is not None:
            assert ready["conntrack"] is glue, (ready, "CONFIG_NETFILTER_NETLINK_GLUE_CT", glue)
        before = time.time()
        assert probe(routed.client, ROUTER_V4, 8080, timeout=0.5) == "filtered"
        after = time.time()
        rec = reader.wait(lambda line: line.get("prefix") == "fwsync test", 5, "record")
        counters = reader.stop()
    print(f"conntrack={ready['conntrack']} record={rec} "
          f"kernel stamp → reader: {(rec['received'] - rec['time']) * 1e3:.3f} ms")
    assert (rec["family"], rec["proto"], rec["source"]) == (4, "tcp", CLIENT_V4)
    assert (rec["dest"], rec["dport"]) == (SERVER_V4, 80)  # after the router's DNAT
    assert (rec["indev"], rec["outdev"]) == (ROUTER_CLIENT_IF, ROUTER_SERVER_IF)
    assert isinstance(rec["sport"], int) and rec["sport"] > 0
    if ready["conntrack"]:
        assert (rec["orig_dest"], rec["orig_dport"]) == (ROUTER_V4, 8080)
    else:
        assert (rec["orig_dest"], rec["orig_dport"]) == (None, None)
    assert before <= rec["time"] <= after and rec["time"] <= rec["received"] < rec["time"] + 1
    assert counters == {"lost": 0, "overruns": 0}


def test_an_ipv6_packet_is_logged_without_nat(routed: Routed) -> None:
    with reader_in(routed.router) as reader:
        ready = reader.wait(lambda line: "ready" in line, 10, "ready line")
        assert probe(routed.client, SERVER_V6, 5432, timeout=0.5) == "filtered"
        rec = reader.wait(lambda line: line.get("prefix") == "v6", 5, "record")
    assert (rec["family"], rec["proto"], rec["source"], rec["dest"], rec["dport"]) == (
        6, "tcp", CLIENT_V6, SERVER_V6, 5432)
    assert (rec["indev"], rec["outdev"]) == (ROUTER_CLIENT_IF, ROUTER_SERVER_IF)
    # No NAT: the original destination is the packet's own, where the kernel attaches it.
    assert (rec["orig_dest"], rec["orig_dport"]) == (
        (SERVER_V6, 5432) if ready["conntrack"] else (None, None))


def test_a_group_another_socket_holds_is_refused_with_a_clear_error(routed: Routed) -> None:
    res = routed.router.run([sys.executable, "-I", "-c", _TWICE, REPO, str(GROUP)])
    assert res.stdout.startswith("1 nflog: binding group 77: already bound by another socket"), \
        res.stdout + res.stderr


def test_an_overrun_socket_counts_what_it_lost_and_goes_on(routed: Routed) -> None:
    sent = 5000
    proc = routed.router.spawn([sys.executable, "-I", "-c", _SLOW, REPO, str(GROUP)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        routed.client.run([sys.executable, "-I", "-c", _FLOOD, SERVER_V4, str(sent)])
        proc.stdin.write("drain\n")
        proc.stdin.flush()
        drained = json.loads(proc.stdout.readline())
        routed.client.run([sys.executable, "-I", "-c", _FLOOD, SERVER_V4, "1"])
        out, err = proc.communicate("next\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()  # by its pid: the process this test started
            proc.wait()
    got = json.loads(out.splitlines()[-1])
    print(f"sent {sent} + 1: after the flood {drained}, after one more {got}")
    assert proc.returncode == 0, err
    assert drained["overruns"] >= 1 and 0 < drained["records"] < sent, drained
    # The packets dropped after the overrun were numbered all the same: the next one shows them.
    assert got["records"] == drained["records"] + 1, got
    assert got["records"] + got["lost"] == sent + 1, got
