"""The netlink table dump's answer, parsed: names and flags, done and error messages."""

from __future__ import annotations

import errno
import struct

import pytest

from fwsync.backends.nft_netlink import NLMSG_DONE, NLMSG_ERROR, parse, request

pytestmark = pytest.mark.unit


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _msg(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def _table(name: str, flags: int | None) -> bytes:
    attrs = _attr(1, name.encode() + b"\0")
    if flags is not None:
        attrs += _attr(2, struct.pack(">I", flags))
    return _msg((10 << 8) | 0, struct.pack("=BBH", 1, 0, 0) + attrs)


def test_tables_and_their_flags_then_done() -> None:
    tables: dict[str, int] = {}
    assert not parse(_table("fwsync", 0) + _table("firewalld", 2), tables)
    assert parse(_table("odd", None) + _msg(NLMSG_DONE, struct.pack("=i", 0)), tables)
    assert tables == {"fwsync": 0, "firewalld": 2, "odd": 0}


def test_an_error_answer_is_an_oserror() -> None:
    with pytest.raises(OSError) as caught:
        parse(_msg(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + b"\0" * 16), {})
    assert caught.value.errno == errno.EPERM


def test_the_request_is_a_dump_of_inet_tables() -> None:
    length, kind, flags, _seq, _port = struct.unpack_from("=IHHII", request())
    assert (length, kind, flags) == (20, 0x0A01, 0x301)
    assert request()[16] == 1  # NFPROTO_INET
