"""The compliance report against real traffic on a real broker: its counts match what was sent and
what the hubs' audit stores hold."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from broker.core.edxml import Organ, build_document
from tests.relay import Relay

pytestmark = pytest.mark.broker

PROVINCE, DEPARTMENT, COMMUNE = "000.00.00.H41", "000.00.01.H41", "000.00.51.H41"
FAR = "001.00.31.H14"  # a commune in the three-tier province
DEADLINE_SECONDS = 3.0
VN = timezone(timedelta(hours=7))


RELAY = {"settings": {"report": {"utc_offset": "+07:00", "ack_deadline_hours": DEADLINE_SECONDS / 3600,
                                  "targets": {"province": 0.7, "department": 0.85, "commune": 0.6}}}}


def _unsigned(relay: Relay, sender: str, recipient: str) -> bytes:
    return build_document(Organ(sender, relay.topology.agencies[sender].name), [Organ(recipient)],
                          subject="chưa ký")


@pytest.fixture(scope="module")
def traffic(relay: Relay) -> dict[str, bytes]:
    """Province: 4 signed documents (3 to a commune, 1 across provinces) and 1 unsigned.
    Commune: 1 signed, 1 unsigned.  Department: 1 signed, 1 to an unknown recipient.
    The commune answers its 3 documents: 01 at once, 03 after the deadline, none; and 05 on the
    first.  The far commune answers 01 at once."""
    to_commune = [relay.document(PROVINCE, [COMMUNE], subject=f"chỉ đạo {i}") for i in range(3)]
    to_far = relay.document(PROVINCE, [FAR], subject="liên tỉnh")
    province, commune, department = relay.client(PROVINCE), relay.client(COMMUNE), relay.client(DEPARTMENT)
    for doc in [*to_commune, to_far]:
        province.send(doc)
    province.send(_unsigned(relay, PROVINCE, COMMUNE))
    commune.send(relay.document(COMMUNE, [PROVINCE], subject="báo cáo"))
    commune.send(_unsigned(relay, COMMUNE, PROVINCE))
    department.send(relay.document(DEPARTMENT, [PROVINCE], subject="tờ trình"))
    department.send(relay.document(DEPARTMENT, ["999.99.99.H99"], subject="không có nơi nhận"))

    got = {i.body for i in relay.take(COMMUNE, 3, accept=lambda i: i.body in to_commune)}
    assert got == set(to_commune)
    key = relay.key(COMMUNE)
    commune.send(commune.status_for(to_commune[0], "01", key=key))
    commune.send(commune.status_for(to_commune[0], "05", key=key))
    assert [i.body for i in relay.take(FAR, 1, accept=lambda i: i.body == to_far)] == [to_far]
    far = relay.client(FAR)
    far.send(far.status_for(to_far, "01", key=relay.key(FAR)))
    time.sleep(DEADLINE_SECONDS + 1.5)
    commune.send(commune.status_for(to_commune[1], "03", key=key))
    relay.take(PROVINCE, 4, accept=lambda i: i.kind == "edxml" and b"StatusCode" in i.body)
    relay.wait_idle()
    return {"first": to_commune[0]}


def _report(relay: Relay, *extra: str) -> dict[tuple[str, str], dict[str, str]]:
    today = datetime.now(VN).date().isoformat()
    out = relay.cli("report", "--from", today, "--to", today, "--csv", *extra)
    assert out.returncode == 0, out.stderr
    return {(r["scope"], r["id"]): r for r in csv.DictReader(io.StringIO(out.stdout))}


def test_report_counts_match_the_traffic(relay: Relay, traffic: dict[str, bytes]) -> None:
    rows = _report(relay)
    p, c, d, f = (rows[("agency", a)] for a in (PROVINCE, COMMUNE, DEPARTMENT, FAR))
    assert (p["submitted"], p["sent"], p["refused"], p["signed_share"]) == ("5", "4", "1", "0.8000")
    assert p["refused_codes"] == "SIG_MISSING=1"
    assert (c["submitted"], c["sent"], c["refused"]) == ("2", "1", "1")
    assert (d["submitted"], d["sent"], d["refused"], d["refused_codes"]) == ("2", "1", "1", "RECIPIENT_UNKNOWN=1")
    # the commune received 3: one acknowledged in time (01), one late (03), one not at all
    assert (c["received"], c["acknowledged"], c["late"], c["ack_share"]) == ("3", "1", "1", "0.3333")
    assert c["statuses"] == "01=1;03=1;05=1"
    assert (f["received"], f["acknowledged"], f["statuses"]) == ("1", "1", "01=1")
    # the province received what the commune and the department sent, and answered nothing
    assert (p["received"], p["acknowledged"]) == ("2", "0")
    # per level, against the targets
    province, commune = rows[("level", "province")], rows[("level", "commune")]
    assert (province["sent"], province["signed_share"], province["target"], province["meets_target"]) == \
        ("4", "0.8000", "0.7000", "yes")
    assert (commune["submitted"], commune["sent"], commune["meets_target"]) == ("2", "1", "no")
    assert rows[("level", "department")]["meets_target"] == "no"
    assert rows[("level", "ministry")]["target"] == ""


def test_report_counts_match_the_audit_store(relay: Relay, traffic: dict[str, bytes]) -> None:
    """Totals over all agencies equal what the hubs' audit tables hold, counted with plain SQL."""
    kinds = {"accepted": 0, "delivered": 0, "rejected": 0}
    for db in Path(relay.settings.state_url).glob("*.sqlite3"):
        with sqlite3.connect(db) as conn:
            for (body,) in conn.execute("SELECT body FROM audit WHERE kind = 'receipt'"):
                for kind in kinds:
                    if f"<lt:Kind>{kind}</lt:Kind>" in body:
                        kinds[kind] += 1
    agencies = [r for (scope, _), r in _report(relay).items() if scope == "agency"]
    assert sum(int(r["sent"]) for r in agencies) == kinds["accepted"] == 6
    assert sum(int(r["received"]) for r in agencies) == kinds["delivered"] == 6
    assert sum(int(r["refused"]) for r in agencies) == kinds["rejected"] == 3


def test_register_and_terminal_output(relay: Relay, traffic: dict[str, bytes], tmp_path: Path) -> None:
    """With the province's register (10 documents issued), its share is 4/10, below the 70% target."""
    issued = tmp_path / "issued.csv"
    issued.write_text(f"organ_id,issued\n{PROVINCE},10\n", encoding="utf-8")
    rows = _report(relay, "--issued", str(issued))
    province = rows[("level", "province")]
    assert (province["issued"], province["signed_share"], province["meets_target"]) == ("10", "0.4000", "no")
    today = datetime.now(VN).date().isoformat()
    text = relay.cli("report", "--from", today, "--to", today).stdout
    assert f"Compliance report {today} .. {today} (UTC+0700)" in text
    line = next(x for x in text.splitlines() if x.startswith("province "))
    assert line.split()[1:] == ["5", "4", "5", "80%", "70%", "yes", "2", "0%"]


def test_report_period_and_errors(relay: Relay, traffic: dict[str, bytes], tmp_path: Path) -> None:
    tomorrow = (datetime.now(VN).date() + timedelta(days=1)).isoformat()
    out = relay.cli("report", "--from", tomorrow, "--to", tomorrow, "--csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and all(r["submitted"] == r["received"] == "0" for r in rows)
    backwards = relay.cli("report", "--from", tomorrow, "--to", "2020-01-01")
    assert backwards.returncode == 2 and backwards.stderr.startswith("ERROR USAGE:")
    bad = tmp_path / "bad.csv"
    bad.write_text("organ_id,issued\n000.00.00.H99,3\n", encoding="utf-8")
    unknown = relay.cli("report", "--from", tomorrow, "--to", tomorrow, "--issued", str(bad))
    assert unknown.returncode == 2 and "000.00.00.H99" in unknown.stderr
