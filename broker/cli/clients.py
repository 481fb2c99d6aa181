"""What a command needs to act as an agency or a hub on this machine: its client and its keys,
assembled from the deployment's settings (its own files in the trust store, the topology)."""

from __future__ import annotations

from adapters.localdb import HandedOver
from adapters.sdk import AgencyClient
from broker.core.delivery import DeliveryCheck
from broker.core.signer import SigningKey
from broker.core.topology import Topology
from broker.relay import layout
from broker.relay.assemble import has_key, hub_certificates_in_force, principal_key, topology_in_force
from broker.relay.livetrust import recipient_trust
from broker.settings import Settings


def agency_client(settings: Settings, organ_id: str) -> AgencyClient:
    """The agency's own client: its broker account on its hub (its client
    certificate alone), and its handed-over store."""
    topology = topology_in_force(settings)
    url = layout.account_url(topology, topology.agency(organ_id).hub, settings.keys.agency_account(organ_id),
                             settings.keys.broker_ca)
    paths = settings.keys.agency(organ_id)
    key = principal_key(paths, modules=settings.pkcs11_modules) if has_key(paths) else None  # its own, if here
    return AgencyClient(organ_id, url, handed=HandedOver(settings.data_dir / "agencies" / f"{organ_id}.sqlite3"),
                        check=delivery_check(settings, topology), key=key)


def delivery_check(settings: Settings, topology: Topology) -> DeliveryCheck:
    """What this deployment's agencies check before taking a message from their inbox, with the
    hubs' revocation truth: CRLs fetched, OCSP, the topology's grace (``broker.relay.livetrust``)."""
    trust = recipient_trust(settings.pki, topology.settings.revocation, settings.data_dir / "crls",
                            fetch_seconds=settings.tuning.crl_fetch_seconds)
    return DeliveryCheck(trust, topology, hub_certificates_in_force(settings, topology))


def agency_key(settings: Settings, organ_id: str) -> SigningKey:
    return principal_key(settings.keys.agency(organ_id), modules=settings.pkcs11_modules)


def hub_key(settings: Settings, hub_id: str) -> SigningKey:
    return principal_key(settings.keys.hub(hub_id), modules=settings.pkcs11_modules)
