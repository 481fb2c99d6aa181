"""The hub worker: one process serving one hub, session after session.

A session (:mod:`broker.relay.transport`) carries the ingress consumer, a publisher into the
hub's own vhost (inboxes, parking, retry tiers) and one publisher per neighbouring hub (with the
link account, which may only publish to that hub's ingress), all on one thread and one event
loop.  Each delivery goes through the pipeline (:mod:`broker.relay.pipeline`).  CPU work
(verification) runs inline: on this GIL-bound runtime a second thread would only add hand-offs.
Scale out with more worker processes: they compete on the ingress queue and coordinate through
the state store's claims.

Any lost connection ends the session; the worker opens the next one with back-off.  Unacked
deliveries come back, and the claims make the second pass idempotent.  Beside the pipeline, the
worker signs audit-log checkpoints and hands them to its neighbours, raises trust alerts, and
runs the queue watch and the CRL fetcher in threads of their own.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from broker.core import wire
from broker.core.directory import Directory
from broker.core.errors import TransientError
from broker.core.hop import Hop
from broker.core.topology import Topology
from broker.core.trust import TrustSource
from broker.relay import checkpoints, hooks, layout, metrics
from broker.relay.directories import Directories
from broker.relay.pipeline import Pipeline
from broker.relay.retry import RetryPolicy
from broker.relay.revocation import CrlFetcher
from broker.relay.store import SqlStore
from broker.relay.transport import LOCAL, Outgoing, Plan, Received, Session, Transport
from broker.relay.watch import QueueWatch
from broker.settings import Fault, PkiLayout, Tuning

log = structlog.get_logger("lienthong.worker")

Provision = Callable[[Topology, Topology], None]
"""Bring this hub's broker objects from one topology to the next (``provision.sync_hub``)."""


class HubWorker:
    def __init__(self, hop: Hop, store: SqlStore, keys: PkiLayout, transport: Transport, *,
                 trust: TrustSource | None = None, crl_cache: Path | None = None, prefetch: int = 256,
                 tuning: Tuning | None = None, extra_hooks: tuple[hooks.Hook, ...] = (),
                 directories: Directories | None = None, provision: Provision | None = None) -> None:
        """``trust``: where the trust store in force comes from (default: the hop's, fixed);
        ``crl_cache``: where the CRL fetcher keeps what it fetches (None: no fetcher);
        ``directories``: the hub's directory in force (None: it runs on its configured topology
        and takes none); ``provision``: how a new directory's broker objects of this hub are made
        (on its own broker, with its operator's admin account)."""
        self.hub = hop.hub
        self.topology = hop.topology
        self.trust = trust or hop.trust
        self.crl_cache = crl_cache
        self.store = store
        self.keys = keys  # the hub's own material: its two broker accounts and the broker's CA
        self.transport = transport
        self.prefetch = prefetch
        self.tuning = tuning or Tuning()
        self.owner = f"{self.hub}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.log = log.bind(hub=self.hub)
        self.stats = hooks.Stats()
        self.hooks = hooks.Hooks((hooks.Metrics(self.hub), hooks.Events(self.log), self.stats,
                                  hooks.Faults(Fault.parse(self.tuning.fault)), *extra_hooks), self.log)
        self.pipeline = Pipeline(hop, store, self.owner, RetryPolicy.from_ms(self.topology.settings.retry_tiers_ms),
                                 self.hooks, trust=self.trust,
                                 hold_seconds=self.tuning.receipt_hold_seconds,
                                 batch_seconds=self.tuning.entry_batch_seconds, directories=directories,
                                 record_batches=self.tuning.record_batches)
        self.directories = directories
        self.provision = provision
        if directories is not None:
            directories.apply = self._put_in_force
        self.watch: QueueWatch | None = None
        self.session: Session | None = None
        self._stopping = False
        self._stopped = threading.Event()
        self._witnessed_seq = 0
        self._links_down: set[str] = set()
        """Neighbours whose link is down (the ``link-down`` alert holds)."""

    # -- life cycle ------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; open a new session with back-off whenever one ends."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        self._start_threads()
        backoff = 0.5
        while not self._stopping:
            started = time.monotonic()
            try:
                self.serve_session()
            except Exception as exc:  # noqa: BLE001 - a worker must outlive any one failure
                self.log.error("session failed", error=repr(exc))
            if self._stopping:
                break
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 15.0)
            self.log.warning("reconnecting", in_seconds=backoff)
            time.sleep(backoff)
        try:
            checkpoints.checkpoint(self.store, self.hub, self.pipeline.hop.key)
        except TransientError as exc:
            self.log.warning("final audit checkpoint failed", error=str(exc))
        self.store.close()
        self.log.info("stopped", **self.stats.counts)

    def _start_threads(self) -> None:
        self.watch = QueueWatch(self.hub, self.topology, self._url(self.hub, "hub"), self.tuning.watch_seconds,
                                self._stopped)
        threading.Thread(target=self.watch.run, name="queue-watch", daemon=True).start()
        if self.tuning.crl_fetch_seconds > 0 and self.crl_cache is not None:
            urls = list(self.topology.settings.revocation.crl_urls)
            fetcher = CrlFetcher(self.trust, self.crl_cache, urls, self.tuning.crl_fetch_seconds, self._stopped)
            threading.Thread(target=fetcher.run, name="crl-fetch", daemon=True).start()

    def stop(self) -> None:
        """Stop serving (from a signal handler or another thread)."""
        self._stopping = True
        self._stopped.set()
        if self.session is not None:
            self.session.loop.call_threadsafe(self._teardown)

    def plan(self) -> Plan:
        """What a session connects: this hub's ingress, its own vhost and each neighbour's."""
        own = self._url(self.hub, "hub")
        neighbours = {n: self._url(n, "link") for n in self.topology.neighbours(self.hub)}
        return Plan(own, wire.Q_INGRESS, self.prefetch, {LOCAL: own, **neighbours})

    def _url(self, broker_of: str, role: str) -> str:
        """This hub's ``role`` account ("hub": its own vhost; "link": a neighbour's) on the broker
        of ``broker_of``, over TLS with the account's client certificate."""
        return layout.account_url(self.topology, broker_of, self.keys.hub_account(self.hub, role),
                                  self.keys.broker_ca)

    def serve_session(self) -> None:
        """Open one session and serve on it until it ends."""
        self.open_session().run()
        self.session = None

    def open_session(self) -> Session:
        """A new session, the pipeline working over it (served by its ``run``)."""
        session = self.session = self.transport.session(self.plan(), self)
        self.pipeline.attach(session)
        session.loop.call_later(self.tuning.checkpoint_seconds, self._checkpoint)
        self._alerts()
        return session

    # -- transport.Events ------------------------------------------------------------------------

    def delivered(self, message: Received) -> None:
        self.pipeline.receive(message)

    def ready(self) -> None:
        assert self.session is not None
        links = {k: p.ready for k, p in self.session.publishers.items() if k != LOCAL}
        self.log.info("serving", links=sorted(k for k, up in links.items() if up),
                      directory=self.directories.version if self.directories is not None else None)
        self.session.consumer.start()
        for neighbour, up in sorted(links.items()):
            self.link(neighbour, up, "" if up else "not connected yet")
        self._announce()

    def link(self, name: str, up: bool, why: str) -> None:
        """A neighbour's link came up or went down: what waits for it is forwarded, or what is for
        it waits (:mod:`broker.relay.outbound`); the ``link-down`` alert is raised or cleared."""
        metrics.LINK_UP.labels(self.hub, name).set(1 if up else 0)
        was_down = name in self._links_down
        if up:
            self._links_down.discard(name)
            self.pipeline.outbound.up(name)
            if was_down:
                self.log.info("alert cleared", kind="link-down", subject=name)
            self._announce(only=name)
        else:
            self._links_down.add(name)
            self.pipeline.outbound.down(name)
            if not was_down:
                self.log.warning("alert", kind="link-down", subject=name, why=why,
                                 detail=f"hub {name}'s broker cannot be reached; what is for it waits in "
                                        f"{wire.outbound_queue(name)}")

    def lost(self, what: str, why: str) -> None:
        if not self._stopping:
            self.log.warning("connection lost", what=what, why=why)
        self._teardown()

    def _teardown(self) -> None:
        if self.session is not None:
            self.pipeline.detach()
            self.session.close()

    # -- periodic work ---------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        """Sign the head of the audit log, hand it to the neighbours to witness, raise trust
        alerts; then again every ``checkpoint_seconds``."""
        self._alerts()
        try:
            head = checkpoints.checkpoint(self.store, self.hub, self.pipeline.hop.key)
            if head and head[0] != self._witnessed_seq and self.session is not None:
                self.log.debug("audit checkpoint", seq=head[0])
                checkpoints.hand_to_neighbours(self.session.publishers, self.topology, self.hub, head[0], head[2],
                                               self.log)
                self._witnessed_seq = head[0]
                tsa = self.topology.settings.audit.tsa_url
                if tsa:  # its own thread: an authority's answer must not hold the message loop
                    threading.Thread(target=checkpoints.time_stamp, name="time-stamp", daemon=True,
                                     args=(self.store, self.hub, tsa, head[0], head[2], self.log)).start()
        except TransientError as exc:
            self.log.warning("audit checkpoint failed", error=str(exc))
        self._announce()
        if self.session is not None and not self._stopping:
            self.session.loop.call_later(self.tuning.checkpoint_seconds, self._checkpoint)

    def _alerts(self) -> None:
        hop = self.pipeline.hop
        for kind, sentence in metrics.trust_alerts(self.hub, hop.key.cert, self.trust.current(),
                                                   limits=self.topology.settings.alerts):
            self.log.warning("alert", kind=kind, detail=sentence)

    # -- the directory ---------------------------------------------------------------------------

    def _announce(self, only: str | None = None) -> None:
        """Tell each neighbour which directory version runs here (one that is behind is answered
        with the newer one: :class:`broker.relay.directories.Directories`).  A hub that runs on
        its topology file has none to offer and says nothing until a neighbour speaks."""
        if self.directories is None or self.directories.current is None or self.session is None:
            return
        body = self.directories.announcement()
        for n in [only] if only else self.topology.neighbours(self.hub):
            publisher = self.session.publishers.get(n)
            if publisher is not None and publisher.ready:
                publisher.publish(Outgoing(wire.link_exchange(self.hub), "", body, wire.message_id(body),
                                           wire.names(self.topology).link_user(self.hub),
                                           {wire.H_KIND: wire.Kind.DIRECTORY_VERSION}), lambda _ok: None)

    def _put_in_force(self, new: Directory, previous: Topology) -> None:
        """Apply a checked directory while the hub serves: first this hub's broker objects (a new
        agency's inbox and account, a departed one's account withdrawn), then the routes, pins and
        hub certificates the next batch is judged with.  A change of neighbours or of their brokers
        ends the session: the next one connects as the directory says (unacked deliveries come back
        and the claims make their second pass idempotent)."""
        if self.provision is not None:
            self.provision(previous, new.topology)
        old_plan = self.plan()
        self.topology = new.topology
        # each hub certificate is judged whenever one of its hub's records is checked (HUB_REVOKED)
        self.pipeline.use(replace(self.pipeline.hop, topology=new.topology, hub_certs=dict(new.hub_certificates),
                                  limits=new.topology.settings.limits))
        if self.watch is not None:
            self.watch.use(new.topology)
        if self.plan() != old_plan and self.session is not None:
            self.log.info("neighbours changed: reconnecting", version=new.version)
            self.session.loop.call_later(0, self._teardown)
