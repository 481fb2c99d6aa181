"""Several hubs with no broker: each hub's worker on an in-memory broker of its own, and what one
publishes for a neighbour carried into that neighbour's ingress, as RabbitMQ's entry exchanges do.
Real hops, real state stores, real signatures; virtual time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from broker.core import wire
from broker.core.topology import Topology
from broker.core.trust import TrustSource
from broker.relay.directories import Directories
from broker.relay.memory import MemoryBroker, MemoryTransport, Stored
from broker.relay.store import SqlStore, sqlite_store
from broker.relay.worker import HubWorker, Provision
from broker.settings import PkiLayout, Tuning
from tests import hops


class Network:
    """The hubs of ``topology`` on in-memory brokers, each with its state store in ``path``."""

    def __init__(self, pki: Path, topology: Topology, path: Path, *,
                 provision: Callable[[str], Provision] | None = None, trust: TrustSource | None = None) -> None:
        """``trust``: where every hub takes its trust store from (a :class:`LiveTrust` follows its
        directory, as running hubs do); default, a fixed snapshot of ``pki``."""
        self.pki, self.topology, self.path, self.trust = pki, topology, path, trust
        self.brokers = {h: MemoryBroker() for h in topology.hubs}
        self.stores: dict[str, SqlStore] = {h: sqlite_store(path / f"{h}.sqlite3") for h in topology.hubs}
        self.provision = provision
        self.workers: dict[str, HubWorker] = {}

    def start(self, hub: str) -> HubWorker:
        """A worker of ``hub`` (on the directory its store kept, else ``topology``), its session open."""
        trust = self.trust or hops.hop(self.pki, self.topology, hub).trust
        directories = Directories(hub, self.stores[hub], trust, PkiLayout(self.pki).authorities, _quiet(),
                                  local=self.topology.settings)
        kept = directories.load()
        hop = hops.hop(self.pki, kept.topology if kept else self.topology, hub, trust=trust.current())
        worker = HubWorker(hop, self.stores[hub], PkiLayout(self.pki), MemoryTransport(self.brokers[hub]), trust=trust,
                           tuning=Tuning(receipt_hold_seconds=0.0), directories=directories,
                           provision=self.provision(hub) if self.provision else None)
        worker.open_session()
        self.workers[hub] = worker
        return worker

    def stop(self, hub: str) -> None:
        """The hub's worker dies: nothing of it runs any more, what it had not acked waits."""
        worker = self.workers.pop(hub)
        if worker.session is not None:
            self.brokers[hub].crash(worker.session)  # type: ignore[arg-type]

    def advance(self, hub: str, seconds: float) -> None:
        """Let ``seconds`` pass on ``hub``'s clock (its periodic work comes due), then settle."""
        session = self.workers[hub].session
        assert session is not None
        session.loop.advance(seconds)  # type: ignore[attr-defined]
        self.run()

    def run(self, rounds: int = 50) -> None:
        """Run every hub and carry what each published for a neighbour, until nothing moves."""
        for _ in range(rounds):
            for broker in self.brokers.values():
                broker.run()
            if not self._carry():
                return
        raise AssertionError("the network did not settle")

    def _carry(self) -> int:
        moved = 0
        for source, broker in self.brokers.items():
            for queue in list(broker.queues):
                target, _, rest = queue.partition(":")
                if target in self.brokers and rest == f"{wire.link_exchange(source)}:" and broker.queues[queue]:
                    moved += broker.move(queue, "ingress", exchange=wire.link_exchange(source)) \
                        if target == source else self._across(broker, queue, target, source)
        return moved

    def _across(self, broker: MemoryBroker, queue: str, target: str, source: str) -> int:
        n = 0
        while broker.queues[queue]:
            stored = broker.queues[queue].popleft()
            self.brokers[target].put("ingress", stored.body, exchange=wire.link_exchange(source),
                                     headers=stored.headers, message_id=stored.message_id)
            n += 1
        return n

    def queue(self, hub: str, name: str) -> list[Stored]:
        return self.brokers[hub].messages(name)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


class _quiet:
    """A logger for the directories of a test network: it keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def _log(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    info = warning = error = debug = _log
