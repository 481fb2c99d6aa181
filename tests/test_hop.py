"""The hop's admission rules with no broker: `Hop.process(Inbound(...))` is fed the whole raw-AMQP
batch of the hostile corpus (tests/hostile.py: signature attacks, parse attacks, policy cases,
forged hub headers), as the national hub receives it from G22's entry exchange.  The same cases
run over a real relay in tests/test_hostile.py; here each decision is seen directly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from broker.core import receipts, wire
from broker.core.outcome import Inbound, Outcome
from broker.core.parsing import ParseLimits, parse
from broker.core.routing import PARKING, Target
from broker.core.signer import SigningKey
from broker.core.topology import Topology
from broker.relay import devpki
from tests import hops
from tests.hostile import AMQP_NAMES, AMQP_SENDER, BYSTANDER, MAX_BYTES, Case, Kit, amqp_cases

ROOT = Path(__file__).resolve().parents[1]
HUB = "national"  # AMQP_SENDER's hub


@dataclass
class Offline:
    """What tests/hostile.py's Kit needs of a relay (topology, PKI, agency keys), without a broker."""

    topology: Topology
    settings: SimpleNamespace

    def key(self, organ_id: str) -> SigningKey:
        d = self.settings.pki / "agencies" / organ_id
        return SigningKey.load(d / "key.pem", d / "cert.pem")


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Case, Outcome]]]:
    """Each case of the batch and the national hub's decision on it."""
    topology = Topology.load(ROOT / "config" / "topology.yaml")
    pki = devpki.init(tmp_path_factory.mktemp("hop") / "pki", topology)
    devpki.revoke(pki, [pki / "agencies" / BYSTANDER / "cert.pem"])  # as tests/test_hostile.py does
    hop = hops.hop(pki, topology, HUB, limits=ParseLimits(max_bytes=MAX_BYTES, max_depth=64))  # the hostile relay's
    entry = wire.agency_exchange(AMQP_SENDER)
    cases = amqp_cases(Kit(Offline(topology, SimpleNamespace(pki=pki))))  # type: ignore[arg-type]
    with hop.sealing() as records:  # one batch, as a worker judges what waits in its queue
        judged = [hop.process(Inbound(case.body, wire.trusted_headers(entry, case.headers), entry)) for case in cases]
    yield {case.name: (case, records.resolve(outcome)) for case, outcome in zip(cases, judged, strict=True)}


def _rejection_to_sender(outcome: Outcome) -> str | None:
    """The code of the hub-signed rejection receipt the outcome sends to the sender's inbox, if any."""
    for copy in outcome.copies:
        if copy.target == Target("inbox", AMQP_SENDER) and copy.headers.get(wire.H_KIND) == "receipt":
            r = receipts.read(parse(copy.body))
            assert r.kind == "rejected" and r.document_sha256 == outcome.digest
            return r.code
    return None


def test_the_batch_is_the_hostile_corpus(judged: dict[str, tuple[Case, Outcome]]) -> None:
    """Every raw-AMQP case of the corpus is judged here, none skipped."""
    assert sorted(judged) == sorted(AMQP_NAMES) and len(judged) >= 60


@pytest.mark.parametrize("name", AMQP_NAMES)
def test_hop_decides_each_hostile_case(name: str, judged: dict[str, tuple[Case, Outcome]]) -> None:
    """A refused case is rejected with its code, parked with that code, and (when the corpus says
    the sender is told) answered by a signed rejection to the sender's inbox carrying it; nothing
    goes on toward a recipient.  A harmless case goes on, unparked."""
    case, outcome = judged[name]
    parked = [c for c in outcome.copies if c.target == PARKING]
    onward = [c for c in outcome.copies if c.target != PARKING and c.headers.get(wire.H_KIND) != "receipt"]
    if case.code is None:
        assert outcome.verdict in ("forwarded", "delivered"), (outcome.code, outcome.reason)
        assert parked == [] and onward
        return
    assert (outcome.verdict, outcome.code) == ("rejected", case.code), outcome.reason
    assert [c.headers[wire.H_CODE] for c in parked] == [case.code]
    assert parked[0].headers[wire.H_HUB] == HUB and parked[0].body == case.body
    assert onward == []
    assert _rejection_to_sender(outcome) == (case.code if case.told else None)
