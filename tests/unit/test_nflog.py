"""NFLOG packet messages, decoded: synthetic nfnetlink_log attributes as the kernel lays them out
(fwsync/observe/nflog.py), from a DNATed IPv4 connection with its conntrack entry to payloads cut
short, which give fewer fields, never an exception."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwsync.backends.netlink import HEADER, NFGEN, attr, attrs
from fwsync.observe.nflog import (
    CONFIG,
    NFULA_CFG_CMD,
    NFULA_CT,
    NFULA_IFINDEX_INDEV,
    NFULA_IFINDEX_OUTDEV,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULA_SEQ,
    NFULA_TIMESTAMP,
    PACKET,
    Logged,
    NflogReader,
    config,
    messages,
    parse_packet,
)

pytestmark = pytest.mark.unit

CLIENT, ROUTER, SERVER = "198.51.100.10", "198.51.100.1", "203.0.113.20"
CLIENT6, SERVER6 = "2001:db8:1::10", "2001:db8:2::20"
NESTED = 0x8000  # NLA_F_NESTED, as the kernel sets it on NFULA_CT and the tuples
INTERFACES = {7: "rc0", 8: "rs0"}


def ifname(index: int) -> str | None:
    return INTERFACES.get(index)


def never() -> float:
    raise AssertionError("the kernel's timestamp should have been used")


def ipv4(src: str, dst: str, proto: int, l4: bytes, *, fragment: int = 0) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, fragment, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + l4


def ipv6(src: str, dst: str, proto: int, rest: bytes) -> bytes:
    return struct.pack(">IHBB16s16s", 6 << 28, len(rest), proto, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + rest


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8, 0)


def ct_original(src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    """NFULA_CT's body: ctnetlink attributes, the original tuple nested twice."""
    v4 = ipaddress.ip_address(src).version == 4
    ip = (attr(1 if v4 else 3, ipaddress.ip_address(src).packed)
          + attr(2 if v4 else 4, ipaddress.ip_address(dst).packed))
    l4 = attr(1, bytes([proto])) + attr(2, struct.pack(">H", sport)) \
        + attr(3, struct.pack(">H", dport))
    tuple_ = attr(1 | NESTED, ip) + attr(2 | NESTED, l4)
    return attr(1 | NESTED, tuple_) + attr(3, struct.pack(">I", 0x1AA))  # CTA_STATUS


def message(*parts: bytes) -> dict[int, bytes]:
    """The attributes of one NFULNL_MSG_PACKET as the reader sees them (flags cleared)."""
    body = NFGEN.pack(socket.AF_INET, 0, socket.htons(77)) + b"".join(parts)
    return attrs(body, NFGEN.size, len(body))


def test_a_dnated_ipv4_connection_with_its_conntrack_original_tuple() -> None:
    got = parse_packet(message(
        attr(NFULA_PREFIX, b"fwsync test\0"),
        attr(NFULA_TIMESTAMP, struct.pack(">QQ", 1_700_000_000, 250_000)),
        attr(NFULA_IFINDEX_INDEV, struct.pack(">I", 7)),
        attr(NFULA_IFINDEX_OUTDEV, struct.pack(">I", 8)),
        attr(NFULA_PAYLOAD, ipv4(CLIENT, SERVER, socket.IPPROTO_TCP, tcp(40000, 80))),
        attr(NFULA_CT | NESTED, ct_original(CLIENT, ROUTER, socket.IPPROTO_TCP, 40000, 8080)),
    ), ifname=ifname, now=never)
    assert got == Logged(
        prefix="fwsync test", family=4, proto="tcp",
        source=ipaddress.IPv4Address(CLIENT), sport=40000,
        dest=ipaddress.IPv4Address(SERVER), dport=80,
        orig_dest=ipaddress.IPv4Address(ROUTER), orig_dport=8080,
        indev="rc0", outdev="rs0", time=1_700_000_000.25)


def test_ipv6_udp_without_conntrack_behind_a_hop_by_hop_header() -> None:
    hop_by_hop = bytes([socket.IPPROTO_UDP, 0]) + b"\x01\x04\0\0\0\0"  # PadN, 8 bytes
    got = parse_packet(message(
        attr(NFULA_PREFIX, b"v6\0"),
        attr(NFULA_IFINDEX_INDEV, struct.pack(">I", 7)),
        attr(NFULA_PAYLOAD, ipv6(CLIENT6, SERVER6, 0, hop_by_hop + udp(5353, 5432))),
    ), ifname=ifname, now=lambda: 42.0)
    assert got == Logged("v6", 6, "udp", ipaddress.IPv6Address(CLIENT6), 5353,
                         ipaddress.IPv6Address(SERVER6), 5432, None, None, "rc0", None, 42.0)


def test_icmp_and_other_protocols_have_no_ports() -> None:
    ping = parse_packet(message(attr(NFULA_PAYLOAD, ipv4(CLIENT, SERVER, 1, b"\x08\0" * 4))),
                        ifname=ifname)
    gre = parse_packet(message(attr(NFULA_PAYLOAD, ipv6(CLIENT6, SERVER6, 47, b"\0" * 8))),
                       ifname=ifname)
    assert ping is not None and (ping.proto, ping.sport, ping.dport) == ("icmp", None, None)
    assert gre is not None and (gre.proto, gre.sport, gre.dport) == ("47", None, None)


def test_an_interface_that_is_gone_has_no_name() -> None:
    got = parse_packet(message(attr(NFULA_IFINDEX_INDEV, struct.pack(">I", 99)),
                               attr(NFULA_PAYLOAD, ipv4(CLIENT, SERVER, 6, tcp(1, 2)))),
                       ifname=ifname)
    assert got is not None and (got.indev, got.outdev) == (None, None)


@pytest.mark.parametrize(("payload", "ports"), [
    (b"", None),  # copy mode "meta": no payload at all
    (ipv4(CLIENT, SERVER, 6, tcp(40000, 80))[:19], None),  # not a whole IPv4 header
    (ipv6(CLIENT6, SERVER6, 6, tcp(40000, 80))[:39], None),
    (b"\x50" + b"\0" * 40, None),  # not IP
    (ipv4(CLIENT, SERVER, 6, tcp(40000, 80))[:22], (None, None)),  # ports cut in half
    (ipv6(CLIENT6, SERVER6, 17, udp(1, 2))[:42], (None, None)),
    (ipv6(CLIENT6, SERVER6, 0, b"\x11\0\0\0"), (None, None)),  # extension header cut short
    (ipv4(CLIENT, SERVER, 6, tcp(40000, 80), fragment=0x0010), (None, None)),  # later fragment
    (ipv6(CLIENT6, SERVER6, 44, bytes([6, 0, 0, 0x81, 0, 0, 0, 1]) + tcp(1, 2)), (None, None)),
    (ipv6(CLIENT6, SERVER6, 44, bytes([6, 0, 0, 0x01, 0, 0, 0, 1]) + tcp(1, 2)), (1, 2)),
])
def test_a_payload_cut_short_gives_fewer_fields(
        payload: bytes, ports: tuple[int | None, int | None] | None) -> None:
    got = parse_packet(message(attr(NFULA_PAYLOAD, payload)), ifname=ifname)
    assert (None if got is None else (got.sport, got.dport)) == ports


def test_a_conntrack_tuple_cut_short_is_no_original_destination() -> None:
    short = attr(1 | NESTED, attr(1 | NESTED, attr(2, b"\xcb\x00")) + attr(2 | NESTED, b""))
    got = parse_packet(message(attr(NFULA_PAYLOAD, ipv4(CLIENT, SERVER, 6, tcp(1, 2))),
                               attr(NFULA_CT | NESTED, short)), ifname=ifname)
    assert got is not None and (got.orig_dest, got.orig_dport) == (None, None)


@given(st.dictionaries(st.integers(0, 25), st.binary(max_size=80)))
def test_any_attributes_decode_or_give_none(attributes: dict[int, bytes]) -> None:
    got = parse_packet(attributes, ifname=ifname, now=lambda: 0.0)
    assert got is None or got.family in (4, 6)


def test_the_config_request_names_the_group_big_endian() -> None:
    request = config(77, 5, attr(NFULA_CFG_CMD, b"\x01"))
    length, kind, flags, seq, _port = HEADER.unpack_from(request)
    assert (length, kind, flags, seq) == (len(request), CONFIG, 0x5, 5)
    assert request[HEADER.size:HEADER.size + NFGEN.size] == b"\0\0\x00\x4d"  # AF_UNSPEC, v0, 77


def packet(seq: int) -> bytes:
    body = NFGEN.pack(socket.AF_INET, 0, socket.htons(77)) + attr(NFULA_SEQ, struct.pack(
        ">I", seq)) + attr(NFULA_PAYLOAD, ipv4(CLIENT, SERVER, 6, tcp(1, seq)))
    return HEADER.pack(HEADER.size + len(body), PACKET, 0, 0, 0) + body


def test_gaps_in_the_groups_sequence_numbers_are_counted_as_lost() -> None:
    reader = NflogReader(77)
    out: list[Logged] = []
    for kind, _seq, body in messages(packet(0) + packet(1) + packet(4) + packet(5)[:-3]):
        assert kind == PACKET
        reader._take(body, out)
    assert [r.dport for r in out] == [0, 1, 4] and reader.lost == 2
