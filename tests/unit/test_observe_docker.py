"""The SDK → PublishedPort translation, on inspect documents shaped as dockerd 20.10 returns
them (the e2e suite checks the same against a real dockerd)."""

import pytest

from fwsync.core.observed import Bridge, DockerNetwork, PublishedPort
from fwsync.observe.docker import (
    extra_bridges,
    networks_of,
    ports_of,
    ports_of_listed,
    routed_ports,
)

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


# GET /networks and GET /containers/json as dockerd 28.5.2 returned them for a network made with
# `-o com.docker.network.bridge.gateway_mode_ipv4=routed` and a container on it run with
# `-p 8080:80` (EXPOSE 81): the IPv4 mapping has no host port, the IPv6 one goes through
# docker-proxy to the container's IPv4 address (the network has no IPv6).
ROUTED_NETWORK = {
    "Name": "routed", "Id": "2ea2169ac7f22a2298b948471296934181b17645c624c56fa4229031ac29bfee",
    "Driver": "bridge", "EnableIPv4": True, "EnableIPv6": False,
    "IPAM": {"Driver": "default", "Options": None,
             "Config": [{"Subnet": "203.0.113.128/28", "Gateway": "203.0.113.129"}]},
    "Options": {"com.docker.network.bridge.gateway_mode_ipv4": "routed"},
}
ROUTED_CONTAINER = {
    "Id": "254958a1d337a0a53234066a45fdac1dd3d07ed314e38b1cfd25c6528abe9fe9",
    "Names": ["/rweb"], "Image": "fwsync-test/busybox:1",
    "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "Type": "tcp"},
              {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
              {"PrivatePort": 81, "Type": "tcp"}],
    "NetworkSettings": {"Networks": {"routed": {
        "NetworkID": "2ea2169ac7f22a2298b948471296934181b17645c624c56fa4229031ac29bfee",
        "Gateway": "203.0.113.129", "IPAddress": "203.0.113.130", "IPPrefixLen": 28,
        "GlobalIPv6Address": ""}}},
}


def test_a_routed_network_and_its_container_ports():
    (net,) = networks_of([ROUTED_NETWORK, {"Driver": "host", "Name": "host"}], "1.51")
    assert net == DockerNetwork(name="routed", bridge="br-2ea2169ac7f2",
                                gateway_modes=((4, "routed"),), subnets=("203.0.113.128/28",))
    assert net.routed_families() == (4,)
    routed = routed_ports(ROUTED_CONTAINER, [net])
    assert routed == [PublishedPort("203.0.113.130", 80, "tcp", "rweb", 80, "254958a1d337",
                                    "fwsync-test/busybox:1", ("routed",), routed="routed")]
    # The IPv6 mapping is an ordinary binding with a host port (served by docker-proxy).
    assert [(p.host_ip, p.host_port, p.routed) for p in ports_of_listed(ROUTED_CONTAINER)] == [
        ("::", 8080, "")]


def test_gateway_modes_are_believed_from_docker_27_on():
    # Docker 26.1 keeps the option but NATs the network like any other (seen here with 26.1.5).
    (old,) = networks_of([ROUTED_NETWORK], "1.45")
    assert old.gateway_modes == () and old.routed_families() == ()
    assert routed_ports(ROUTED_CONTAINER, [old]) == []
    both = dict(ROUTED_NETWORK, Options={
        "com.docker.network.bridge.gateway_mode_ipv4": "nat-unprotected",
        "com.docker.network.bridge.gateway_mode_ipv6": "routed",
        "com.docker.network.bridge.trusted_host_interfaces": "eth1:wg0"})
    (net,) = networks_of([both], "1.51")
    assert net.mode(4) == "nat-unprotected" and net.mode(6) == "routed"
    assert net.trusted_host_interfaces == ("eth1", "wg0")


def test_networks_keep_hostile_names_for_messages_and_only_real_subnets():
    named = dict(ROUTED_NETWORK, Options={"com.docker.network.bridge.name": "lan0"})
    default = dict(ROUTED_NETWORK, Name="bridge",
                   Options={"com.docker.network.bridge.name": "docker0"})
    assert [n.bridge for n in networks_of([named, default], "1.51")] == ["docker0", "lan0"]
    # A network is matched by its subnets, never by its bridge's name, which Docker hands over.
    hostile = dict(ROUTED_NETWORK, Options={"com.docker.network.bridge.name": 'a"+ b'},
                   IPAM={"Config": [{"Subnet": "203.0.113.128/28"}, {"Subnet": "not a net"},
                                    {"Subnet": "203.0.113.131/28"}, "junk"]})
    (net,) = networks_of([hostile], "1.51")
    assert net.bridge == 'a"+ b' and net.subnets == ("203.0.113.128/28", "203.0.113.128/28")


def test_each_network_option_is_believed_from_the_engine_that_brought_it():
    unprotected = dict(ROUTED_NETWORK, Options={
        "com.docker.network.bridge.gateway_mode_ipv4": "nat-unprotected",
        "com.docker.network.bridge.trusted_host_interfaces": "eth1"})
    (on_27,) = networks_of([unprotected], "1.47")
    assert on_27.gateway_modes == () and on_27.trusted_host_interfaces == ()
    (on_28_0,) = networks_of([unprotected], "1.48")
    assert on_28_0.mode(4) == "nat-unprotected" and on_28_0.trusted_host_interfaces == ()
    assert networks_of([unprotected], "garbage")[0].gateway_modes == ()


def test_a_binding_carries_the_containers_own_addresses_and_only_real_ones():
    from fwsync.observe.docker import container_addresses, user_named_endpoints

    settings = {"Networks": {"bridge": {"IPAddress": "198.51.100.130",
                                        "GlobalIPv6Address": "2001:db8:d0c::2"},
                             "other": {"IPAddress": "not-an-address", "GlobalIPv6Address": ""}}}
    assert container_addresses(settings) == ("198.51.100.130", "2001:db8:d0c::2")
    listed = [{"Name": "lan", "Id": "a1", "Driver": "bridge",
               "Options": {"com.docker.network.bridge.name": "br-lan"}},
              {"Name": "gone", "Id": "b2", "Driver": "bridge",
               "Options": {"com.docker.network.bridge.name": "gone0"}},
              {"Name": "bridge", "Id": "c3", "Driver": "bridge", "Options": {}}]
    inspected = {"a1": {"Containers": {"x": {}, "y": {}}}}
    assert user_named_endpoints(listed, inspected.get) == {"lan": 2}
