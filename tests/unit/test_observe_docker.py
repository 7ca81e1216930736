"""The SDK → PublishedPort translation, on inspect documents shaped as dockerd 20.10 returns
them (the e2e suite checks the same against a real dockerd)."""

import pytest

from fwsync.core.observed import PublishedPort
from fwsync.observe.docker import extra_bridges, ports_of

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


def test_extra_bridges_only_lists_custom_bridge_names():
    nets = [
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "docker0"}},
        {"Driver": "bridge", "Options": {}},
        {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "lan0"}},
        {"Driver": "host", "Options": {}},
    ]
    assert extra_bridges(nets) == ("lan0",)
