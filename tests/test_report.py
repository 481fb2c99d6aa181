"""The compliance report against real traffic on a real broker: its counts match what was sent and
what the hubs' audit stores hold."""

from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
import subprocess
import time
import unicodedata
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


UNIT = "Sở Khoa học và Công nghệ tỉnh Nghệ An"
SHARE_BLUE, TARGET_RED = (47, 85, 151), (192, 0, 0)


def _today() -> tuple[str, str]:
    """Today in Vietnam as the command takes it and as the Vietnamese report writes it."""
    today = datetime.now(VN).date()
    return today.isoformat(), today.strftime("%d/%m/%Y")


def _keep(path: Path, name: str) -> None:
    keep = os.environ.get("LIENTHONG_SCREENSHOTS")
    if keep:
        shutil.copy(path, Path(keep) / name)


def test_terminal_report_in_vietnamese(relay: Relay, traffic: dict[str, bytes]) -> None:
    """Without LIENTHONG_LANG=en the text report is Vietnamese: its heading, the day as dd/mm/yyyy,
    the levels' names and their verdicts against the targets."""
    iso, vn = _today()
    out = relay.cli("report", "--from", iso, "--to", iso, env={"LIENTHONG_LANG": "vi"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Báo cáo tình hình gửi, nhận văn bản điện tử {vn} .. {vn} (UTC+0700)")
    line = next(x for x in out.stdout.splitlines() if x.startswith("cấp tỉnh "))
    assert line.split()[2:] == ["5", "4", "5", "80%", "70%", "đạt", "2", "0%"]
    assert next(x for x in out.stdout.splitlines() if x.startswith("cấp xã ")).split()[7:9] == ["KHÔNG", "ĐẠT"]


def test_report_as_a_workbook(relay: Relay, traffic: dict[str, bytes], tmp_path: Path) -> None:
    """`report --format xlsx -o FILE`, read back with openpyxl: Vietnamese title, period and
    reporting unit; per level the share signed and sent (a number formatted as a percentage)
    against its target and the verdict; per agency; and a native bar chart of the level table's
    share and target columns."""
    import openpyxl

    iso, vn = _today()
    path = tmp_path / "bao-cao.xlsx"
    out = relay.cli("report", "--from", iso, "--to", iso, "--format", "xlsx", "-o", str(path), "--unit", UNIT,
                    env={"LIENTHONG_LANG": "vi"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"đã ghi báo cáo vào {path}\n"
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Theo cấp", "Theo cơ quan"]
    ws = wb["Theo cấp"]
    assert ws["A1"].value == "BÁO CÁO TÌNH HÌNH GỬI, NHẬN VĂN BẢN ĐIỆN TỬ QUA TRỤC LIÊN THÔNG"
    assert ws["A2"].value == f"Kỳ báo cáo: từ ngày {vn} đến ngày {vn} (UTC+0700)"
    assert ws["A3"].value == f"Đơn vị báo cáo: {UNIT}"
    cells = [[c.value for c in row] for row in ws.iter_rows()]
    heading = next(n for n, row in enumerate(cells) if row[0] == "Cấp")
    assert cells[heading][:9] == ["Cấp", "Chuyển lên trục", "Đã gửi (chữ ký số hợp lệ)", "Bị từ chối",
                                  "Văn bản đi (theo sổ)", "Căn cứ tính tỷ lệ", "Tỷ lệ ký số, gửi điện tử",
                                  "Chỉ tiêu", "Đánh giá"]
    levels = {row[0]: row for row in cells[heading + 1:] if row[0] and row[1] is not None}
    assert levels["cấp tỉnh"][1:9] == [5, 4, 1, None, 5, 0.8, 0.7, "đạt chỉ tiêu"]
    assert levels["cấp xã"][6:9] == [0.5, 0.6, "không đạt chỉ tiêu"]
    province_row = 1 + next(n for n, row in enumerate(cells) if row[0] == "cấp tỉnh")
    assert ws.cell(province_row, 7).number_format == "0.0%"
    assert all(unicodedata.is_normalized("NFC", v) for row in cells for v in row if isinstance(v, str))
    agencies = {row[0]: row for row in wb["Theo cơ quan"].iter_rows(values_only=True)}
    assert agencies[PROVINCE][1:7] == ("UBND tỉnh Nghệ An", "cấp tỉnh", 5, 4, 1, 0.8)
    assert agencies[COMMUNE][8:11] == (3, 1, 1)
    charts = ws._charts
    assert len(charts) == 1 and charts[0].tagname == "barChart"
    refs = [s.val.numRef.f for s in charts[0].series]
    first, last = heading + 2, heading + 1 + len(levels)
    assert refs == [f"'Theo cấp'!$G${first}:$G${last}", f"'Theo cấp'!$H${first}:$H${last}"]


def test_report_as_a_pdf(relay: Relay, traffic: dict[str, bytes], tmp_path: Path) -> None:
    """`report --format pdf -o FILE`: the font is embedded; poppler's pdftotext finds the Vietnamese
    title, period, unit, headings and figures with their diacritics, in NFC; pdftoppm renders the
    first page, where the chart's share bars and target marks are drawn.  In English on request."""
    if shutil.which("pdftotext") is None:
        if os.environ.get("CI"):
            pytest.fail("poppler-utils is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("poppler-utils is not installed")
    from PIL import Image

    iso, vn = _today()
    path = tmp_path / "bao-cao.pdf"
    out = relay.cli("report", "--from", iso, "--to", iso, "-o", str(path), "--unit", UNIT,
                    env={"LIENTHONG_LANG": "vi"})
    assert out.returncode == 0, out.stderr
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    assert all(line.split()[-5] == "yes" for line in fonts.splitlines()[2:]) and "DejaVuSans" in fonts
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert unicodedata.is_normalized("NFC", text)
    flat = " ".join(text.split())
    for expected in ("BÁO CÁO TÌNH HÌNH GỬI, NHẬN VĂN BẢN ĐIỆN TỬ QUA TRỤC LIÊN THÔNG",
                     f"Kỳ báo cáo: từ ngày {vn} đến ngày {vn} (UTC+0700)", f"Đơn vị báo cáo: {UNIT}",
                     "1. Tỷ lệ văn bản được ký số, gửi điện tử theo cấp so với chỉ tiêu",
                     "Tỷ lệ văn bản ký số, gửi điện tử theo cấp so với chỉ tiêu", "2. Chi tiết theo cơ quan, đơn vị",
                     "UBND tỉnh Nghệ An", "UBND xã Dân Chủ", "đạt chỉ tiêu", "không đạt chỉ tiêu"):
        assert expected in flat, expected
    province = next(x for x in text.splitlines() if x.strip().startswith("cấp tỉnh"))
    assert province.split()[2:9] == ["5", "4", "1", "5", "80%", "70%", "đạt"]
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")],
                   check=True)
    page = next(tmp_path.glob("page*.png"))
    image = Image.open(page).convert("RGB")
    colours = {colour: n for n, colour in image.getcolors(image.width * image.height) or []}
    assert colours.get(SHARE_BLUE, 0) > 200, "no share bars on the first page"
    assert colours.get(TARGET_RED, 0) > 20, "no target marks on the first page"
    _keep(page, "report-page1-vi.png")
    english = tmp_path / "report.pdf"
    assert relay.cli("report", "--from", iso, "--to", iso, "-o", str(english), "--lang", "en").returncode == 0
    text = subprocess.run(["pdftotext", str(english), "-"], capture_output=True, text=True, check=True).stdout
    assert "REPORT ON ELECTRONIC DOCUMENTS" in text and "BÁO CÁO" not in text


def test_report_files_need_a_name(relay: Relay) -> None:
    """xlsx and pdf are written to a file: without -o the command refuses with USAGE."""
    iso, _vn = _today()
    out = relay.cli("report", "--from", iso, "--to", iso, "--format", "pdf")
    assert out.returncode == 2 and out.stderr == "ERROR USAGE: --format pdf writes a file: give -o FILE\n"
