"""Routing over the sample topology: two-tier and three-tier provinces side by side."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

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
    assert all(urlsplit(h.amqp_url).hostname == "rabbitmq" and urlsplit(h.amqp_url).scheme == "amqps"
               for h in docker.hubs.values())


def test_cluster_urls(topo: Topology, tmp_path: Path) -> None:
    """A hub on a cluster lists its nodes; every account's URL names each node, in the hub's vhost,
    over TLS with the account's certificate, and a client connects to the first node that accepts
    a connection."""
    import socket

    from broker.relay import devpki, layout
    from broker.relay.amqp import params

    ca = devpki.make_root("test transport CA")
    account = (tmp_path / "key.pem", tmp_path / "cert.pem")
    devpki.write_pair(account, devpki.issue_account(ca, "hub.H41"))
    (tmp_path / "ca.pem").write_bytes(devpki.pem_cert(ca.cert))
    tls = (f"?cacertfile={quote(str(tmp_path / 'ca.pem'), safe='')}&certfile={quote(str(account[1]), safe='')}"
           f"&keyfile={quote(str(account[0]), safe='')}&auth_mechanism=external")
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        up = live.getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            down = s.getsockname()[1]  # bound, not listening: connections are refused
        raw = {"hubs": [{"id": "H41", "amqp_url": [f"amqps://127.0.0.1:{down}/", f"amqps://127.0.0.1:{up}/"]}],
               "agencies": [{"organ_id": "000.00.00.H41", "hub": "H41"}]}
        cluster = Topology.from_dict(raw)
        url = layout.account_url(cluster, "H41", account, tmp_path / "ca.pem")
        assert url.split() == [f"amqps://hub.H41@127.0.0.1:{down}/lienthong.H41{tls}",
                               f"amqps://hub.H41@127.0.0.1:{up}/lienthong.H41{tls}"]
        nodes = params.parameters(url)
        assert [p.port for p in nodes] == [down, up]
        assert all(p.ssl_options is not None and p.credentials.TYPE == "EXTERNAL" for p in nodes)
        assert params.reachable(url).port == up
    single = layout.account_url(topo, "H41", account, tmp_path / "ca.pem")
    assert single == f"amqps://hub.H41@127.0.0.1:5671/lienthong.H41{tls}"
    assert Topology.from_dict({**raw, "hubs": [{"id": "H41", "amqp_url": "amqps://h1/, amqps://h2/"}]}) \
        .hubs["H41"].amqp_url == "amqps://h1/ amqps://h2/"
