"""The SDK → PublishedPort translation, on inspect documents shaped as dockerd 20.10 returns
them (the e2e suite checks the same against a real dockerd)."""

import pytest

from fwsync.core.observed import Bridge, PublishedPort
from fwsync.observe.docker import extra_bridges, ports_of, ports_of_listed

pytestmark = pytest.mark.unit


def test_ports_of_reads_network_settings_bindings():
    attrs = {
        "Id": "0123456789abcdef", "Name": "/db", "Config": {"Image": "postgres:16"},
        "NetworkSettings": {
            "Networks": {"bridge": {}},
            "Ports": {
                "5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5432"},
                             {"HostIp": "::", "HostPort": "5432"}],
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
                "8080/tcp": None,  # EXPOSEd, not published
            },
        },
    }
    assert ports_of(attrs) == [
        PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432, "0123456789ab", "postgres:16",
                      ("bridge",)),
        PublishedPort("::", 5432, "tcp", "db", 5432, "0123456789ab", "postgres:16", ("bridge",)),
        PublishedPort("127.0.0.1", 5353, "udp", "db", 53, "0123456789ab", "postgres:16",
                      ("bridge",)),
    ]


def test_the_container_list_gives_the_same_bindings_as_inspect():
    # Both shapes as dockerd 20.10 returned them for one container (-p 15432:80,
    # -p 127.0.0.1:16379:81, EXPOSE 83).
    inspected = {
        "Id": "9fe0b47a2bd56d468548e61bf59b3d396733d98522cde88fdf57ef565f55c151",
        "Name": "/pg-a", "Config": {"Image": "fwsync-test/busybox:1"},
        "NetworkSettings": {"Networks": {"bridge": {}}, "Ports": {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "15432"},
                       {"HostIp": "::", "HostPort": "15432"}],
            "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "16379"}],
            "83/tcp": None}},
    }
    listed = {
        "Id": "9fe0b47a2bd56d468548e61bf59b3d396733d98522cde88fdf57ef565f55c151",
        "Names": ["/pg-a"], "Image": "fwsync-test/busybox:1",
        "NetworkSettings": {"Networks": {"bridge": {}}},
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 81, "PublicPort": 16379, "Type": "tcp"},
                  {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 15432, "Type": "tcp"},
                  {"IP": "::", "PrivatePort": 80, "PublicPort": 15432, "Type": "tcp"},
                  {"PrivatePort": 83, "Type": "tcp"}],
    }
    assert sorted(ports_of_listed(listed)) == sorted(ports_of(inspected))
    linked = dict(listed, Names=["/web/db", "/pg-a"], Ports=[{"IP": "0.0.0.0", "PrivatePort": 53,
                                                           "PublicPort": 5353, "Type": "udp"}])
    assert ports_of_listed(linked) == [PublishedPort(
        "0.0.0.0", 5353, "udp", "pg-a", 53, "9fe0b47a2bd5", "fwsync-test/busybox:1",
        ("bridge",))]


def test_extra_bridges_only_lists_custom_bridge_names():
    nets = [
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "docker0"}},
        {"Driver": "bridge", "Options": {}},
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "lan0"}, "Name": "l",
         "IPAM": {"Config": [{"Subnet": "203.0.113.128/28", "Gateway": "203.0.113.129"},
                             {"Subnet": "2001:db8:5::/64"}]}},
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": '"+"'}, "Name": "e",
         "IPAM": {"Config": None}},
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "br-x*"}},
        {"Driver": "host", "Options": {}},
    ]
    # Names are reported as Docker gives them (hostile ones included): the builder decides.
    assert extra_bridges(nets) == (
        Bridge('"+"', "e", ()),
        Bridge("lan0", "l", ("203.0.113.128/28", "2001:db8:5::/64")))
