"""A hub's directory: the one in force, kept in the hub's state store; a new version taken from a
neighbour or from the hub's own operator, checked, applied while the hub serves, and passed on to
the other neighbours; a neighbour that is behind given the version in force.

A version travels the tree hub to hub over the relay's own links (``lt-kind: directory``).  Each
hub checks the signature and the signer (``broker.core.directory``), that the version is newer
than its own, and that it names this hub; it applies it (``apply``: the broker objects of this hub,
then the routes), keeps it, and passes the same bytes on.  Anything refused is parked with its
code and an ``alert``, is not passed on, and the hub keeps the version it has.  Hubs tell their
neighbours the version they run (``lt-kind: directory-version``) when they connect and at every
checkpoint: a hub that was down gets the current version from its parent when it comes back.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from broker.core import deployment, directory
from broker.core.deployment import DeploymentSettings
from broker.core.directory import Directory
from broker.core.errors import DirectoryInvalid, DirectoryRefused, DirectoryStale, SenderNotAllowed
from broker.core.outcome import Copy, Inbound, Outcome, Verdict
from broker.core.routing import PARKING, Target, TargetKind
from broker.core.topology import Topology
from broker.core.trust import TrustSource, TrustStore
from broker.core.wire import H_CODE, H_HUB, H_KIND, H_ORIGIN, H_REASON, Kind, hub_of, kind_of, message_id
from broker.i18n import N_
from broker.private import write_private
from broker.relay.store import SqlStore

Apply = Callable[[Directory, Topology], None]
"""Put a checked directory in force at this hub (given the topology it replaces); raises
:class:`~broker.core.errors.TransientError` when it cannot yet (its broker unreachable, say)."""


class Directories:
    """The directory in force at ``hub``, and what the hub does with directories it is handed."""

    def __init__(self, hub: str, store: SqlStore, trust: TrustSource, authorities: Callable[[], Collection[str]],
                 log: Any, *, local: DeploymentSettings | None = None, copy_to: Path | None = None) -> None:
        """``local``: the hub's own settings (its topology file's), which a directory never changes;
        ``copy_to``: a folder where the directory in force is copied as ``<hub>.json``, for the
        commands an operator runs on this host (:func:`in_force`)."""
        self.hub, self.store, self.trust, self.authorities, self.log = hub, store, trust, authorities, log
        self.local = local or DeploymentSettings()
        self.copy_to = copy_to
        self.current: Directory | None = None
        self.apply: Apply = lambda _new, _old: None

    def read(self, signed: bytes) -> Directory:
        """Check ``signed`` as this hub would (its trust store, its authorities); its topology comes
        with the hub's own settings beside the shared ones it carries."""
        d = directory.read(signed, trust=self.trust.current(), authorities=self.authorities())
        settings = deployment.with_local(d.topology.settings, self.local)
        return dataclasses.replace(d, topology=dataclasses.replace(d.topology, settings=settings))

    def load(self) -> Directory | None:
        """The newest directory this hub kept, checked again; None if it kept none (the hub runs on
        its configured topology until it is handed one)."""
        signed = self.store.directory(self.hub)
        if signed is None:
            return None
        try:
            self.current = self.read(signed)
        except DirectoryRefused as exc:
            self.log.error("alert", kind="directory-refused", code=exc.code, detail=exc.message,
                           note="the directory this hub kept no longer verifies here; it runs on its configured one")
            return None
        self._copy(self.current)
        return self.current

    def _copy(self, d: Directory) -> None:
        if self.copy_to is not None:
            write_private(self.copy_to / f"{self.hub}.json", d.signed)  # atomic: a reader never sees half

    @property
    def version(self) -> int:
        return self.current.version if self.current is not None else 0

    def announcement(self) -> bytes:
        """What this hub tells its neighbours of the version it runs."""
        return json.dumps({"version": self.version}).encode()

    def judge(self, msg: Inbound, topology: Topology) -> Outcome:
        """A directory (or a neighbour's announcement) handed to this hub, running ``topology``."""
        if kind_of(msg.headers) == Kind.DIRECTORY_VERSION:
            return self._announced(msg)
        digest = message_id(msg.body)
        try:
            if msg.origin and not msg.origin.startswith("link:"):
                raise SenderNotAllowed(N_("only a neighbouring hub or this hub's operator may hand it a directory"))
            new = self.read(msg.body)
            if self.current is not None and new.version <= self.current.version:
                if new.digest == self.current.digest:
                    return Outcome(digest, "", Verdict.FORWARDED, (), exactly_once=False)  # in force already
                raise DirectoryStale(N_("version {version} is not newer than version {current}, in force here"),
                                     version=new.version, current=self.current.version)
            if self.hub not in new.topology.hubs:
                raise DirectoryInvalid(N_("the directory names no hub {hub!r}; this hub keeps the one in force"),
                                       hub=self.hub)
        except (DirectoryRefused, SenderNotAllowed) as exc:
            self.log.warning("alert", kind="directory-refused", code=exc.code, detail=exc.message, origin=msg.origin)
            parked = Copy(PARKING, msg.body, {H_KIND: Kind.DIRECTORY, H_CODE: exc.code, H_REASON: exc.message,
                                              H_HUB: self.hub, H_ORIGIN: msg.origin}, "parking")
            return Outcome(digest, "", Verdict.REJECTED, (parked,), code=exc.code, reason=exc.message,
                           exactly_once=False, standing=False)
        self.apply(new, self.current.topology if self.current is not None else topology)
        self.store.keep_directory(self.hub, new.version, new.digest, new.signed)
        self._copy(new)
        previous, self.current = self.version, new
        self.log.info("directory applied", version=new.version, previous=previous, digest=new.digest[:16],
                      origin=msg.origin or "operator")
        came_from = hub_of(msg.origin)
        onward = [n for n in new.topology.neighbours(self.hub) if n != came_from]
        return Outcome(new.digest, "", Verdict.FORWARDED, tuple(self._to(n, new) for n in onward), exactly_once=False)

    def _announced(self, msg: Inbound) -> Outcome:
        """A neighbour said which version it runs: a newer one here goes to it; if this hub is the
        one behind, it says so (the neighbour then sends its version)."""
        digest, neighbour = message_id(msg.body), hub_of(msg.origin)
        try:
            theirs = int(json.loads(msg.body)["version"])
        except (ValueError, KeyError, TypeError):
            theirs = None
        if not neighbour or theirs is None or theirs == self.version:
            return Outcome(digest, "", Verdict.FORWARDED, (), exactly_once=False)
        if theirs > self.version:
            self.log.info("directory behind a neighbour", neighbour=neighbour, version=self.version, theirs=theirs)
            return Outcome(digest, "", Verdict.FORWARDED, (self.announce_to(neighbour),), exactly_once=False)
        assert self.current is not None
        if neighbour not in self.current.topology.neighbours(self.hub):
            return Outcome(digest, "", Verdict.FORWARDED, (), exactly_once=False)
        self.log.info("directory offered", to=neighbour, version=self.current.version, theirs=theirs)
        return Outcome(digest, "", Verdict.FORWARDED, (self._to(neighbour, self.current),), exactly_once=False)

    def announce_to(self, neighbour: str) -> Copy:
        """The announcement of this hub's version, for ``neighbour``."""
        body = self.announcement()
        return Copy(Target(TargetKind.HUB, neighbour), body, {H_KIND: Kind.DIRECTORY_VERSION},
                    f"hub:{neighbour}#{message_id(body)[:16]}")

    def _to(self, neighbour: str, d: Directory) -> Copy:
        return Copy(Target(TargetKind.HUB, neighbour), d.signed, {H_KIND: Kind.DIRECTORY}, f"hub:{neighbour}")


def in_force(copies: Path, configured: Topology, *, trust: Callable[[], TrustStore],
             authorities: Collection[str]) -> Directory | None:
    """The directory the hubs of this host run on: the newest they copied into ``copies`` (checked
    again against ``trust()``; its topology with this host's settings beside the shared ones), or
    None when they run on their topology file ``configured``."""
    newest: tuple[int, bytes] | None = None
    for path in sorted(copies.glob("*.json")) if copies.is_dir() else ():
        try:
            signed = path.read_bytes()
            version = int(json.loads(base64.b64decode(json.loads(signed)["payload"]))["version"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if newest is None or version > newest[0]:
            newest = (version, signed)
    if newest is None:
        return None
    d = directory.read(newest[1], trust=trust(), authorities=authorities)
    settings = deployment.with_local(d.topology.settings, configured.settings)
    return dataclasses.replace(d, topology=dataclasses.replace(d.topology, settings=settings))
