"""Routing over the sample topology: two-tier and three-tier provinces side by side."""

from __future__ import annotations

import pytest

from broker.core import errors
from broker.core.routing import Target, next_hops, route
from broker.core.topology import Topology


@pytest.fixture(scope="module")
def topo() -> Topology:
    return Topology.load("config/topology.yaml")


def test_two_tier_commune_to_three_tier_commune(topo: Topology) -> None:
    """A commune of Nghệ An (two-tier) reaches a commune of Cao Bằng through national, province, district."""
    assert route(topo, "H41", "H14-D31") == ["H41", "national", "H14", "H14-D31"]
    assert route(topo, "H14-D31", "H41") == ["H14-D31", "H14", "national", "H41"]


def test_same_hub_goes_to_inbox(topo: Topology) -> None:
    """Two agencies of one hub: delivered straight into the local inbox."""
    assert next_hops(topo, "H41", ("000.00.51.H41",)) == {Target("inbox", "000.00.51.H41"): ("000.00.51.H41",)}


def test_fan_out_splits_where_routes_split(topo: Topology) -> None:
    """One document to four agencies: one local copy, one copy up carrying the three remote recipients;
    at the national hub the copy splits into one per province subtree."""
    to = ("000.00.00.H41", "001.00.31.H14", "002.00.31.H14", "000.00.00.G22")
    assert next_hops(topo, "H41", to) == {
        Target("hub", "national"): ("001.00.31.H14", "002.00.31.H14", "000.00.00.G22"),
        Target("inbox", "000.00.00.H41"): ("000.00.00.H41",),
    }
    assert next_hops(topo, "national", ("001.00.31.H14", "002.00.31.H14", "000.00.00.G22")) == {
        Target("hub", "H14"): ("001.00.31.H14", "002.00.31.H14"),
        Target("inbox", "000.00.00.G22"): ("000.00.00.G22",),
    }


def test_unknown_recipient(topo: Topology) -> None:
    """A recipient missing from the directory is a permanent error with its own code."""
    with pytest.raises(errors.UnknownRecipient) as info:
        next_hops(topo, "H41", ("999.99.99.H99",))
    assert info.value.code == "RECIPIENT_UNKNOWN"


def test_topology_rejects_cycles_and_orphans() -> None:
    """A hub tree with a cycle, two roots or an unknown parent is refused at load time."""
    agencies = [{"organ_id": "a", "hub": "x"}]
    for hubs in ([{"id": "x", "parent": "y"}, {"id": "y", "parent": "x"}],
                 [{"id": "x"}, {"id": "y"}],
                 [{"id": "x"}, {"id": "z", "parent": "nowhere"}]):
        with pytest.raises(errors.ConfigError):
            Topology.from_dict({"hubs": hubs, "agencies": agencies})


def test_docker_topology_matches(topo: Topology) -> None:
    """The docker-compose topology has the same hubs and agencies, only the broker host differs."""
    docker = Topology.load("config/topology.docker.yaml")
    assert docker.agencies == topo.agencies
    assert {k: (h.parent, h.name) for k, h in docker.hubs.items()} == {
        k: (h.parent, h.name) for k, h in topo.hubs.items()}
    assert all("@rabbitmq:" in h.amqp_url for h in docker.hubs.values())


def test_cluster_urls(topo: Topology) -> None:
    """A hub on a cluster lists its nodes; every account's URL names each node, in the hub's vhost,
    and a client connects to the first node that accepts a connection."""
    import socket

    from broker.relay import layout, transport

    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        up = live.getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            down = s.getsockname()[1]  # bound, not listening: connections are refused
        raw = {"hubs": [{"id": "H41", "amqp_url": [f"amqp://a:b@127.0.0.1:{down}/", f"amqp://a:b@127.0.0.1:{up}/"]}],
               "agencies": [{"organ_id": "000.00.00.H41", "hub": "H41"}]}
        cluster = Topology.from_dict(raw)
        url = layout.amqp_url(cluster, "H41", "hub.H41", "p w")
        assert url.split() == [f"amqp://hub.H41:p%20w@127.0.0.1:{down}/lienthong.H41",
                               f"amqp://hub.H41:p%20w@127.0.0.1:{up}/lienthong.H41"]
        assert [p.port for p in transport.parameters(url)] == [down, up]
        assert transport.reachable(url).port == up
    single = layout.amqp_url(topo, "H41", "hub.H41", "x")
    assert single == "amqp://hub.H41:x@127.0.0.1:5672/lienthong.H41"
    assert Topology.from_dict({**raw, "hubs": [{"id": "H41", "amqp_url": "amqp://h1/, amqp://h2/"}]}) \
        .hubs["H41"].amqp_url == "amqp://h1/ amqp://h2/"
