"""The operators' dashboard in headless Chromium, on a relay with real traffic, in both languages;
and who may reach it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from broker.ops.dashboard import create_app
from tests.relay import Relay, serve

pytestmark = pytest.mark.broker

SENDER, RECIPIENT = "000.00.51.H41", "001.00.31.H14"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("chromium is not installed")
    return path


def test_dashboard_shows_hubs_and_a_rejection(relay: Relay, chromium: str, tmp_path: Path) -> None:
    """After one delivery and one rejection, Chromium renders the page with every hub of the sample
    topology, the rejection with its code, and the parked message; the screenshot is kept."""
    doc = relay.document(SENDER, [RECIPIENT], subject="bảng điều khiển")
    relay.client(SENDER).send(doc)
    bad = relay.document(SENDER, ["999.99.99.H99"], subject="người nhận lạ")
    relay.client(SENDER).send(bad)
    assert len(relay.take(RECIPIENT, 1, accept=lambda i: i.body == doc)) == 1
    relay.wait_idle()
    from broker.ops import queues
    deadline = time.monotonic() + 30  # the management API refreshes its figures every few seconds
    while next(h for h in queues.status(relay.settings) if h.hub == "H41").parked < 1:
        assert time.monotonic() < deadline, "the parked message never showed in the management API"
        time.sleep(1)
    port, server = serve(create_app(relay.settings))
    try:
        url = f"http://127.0.0.1:{port}/"
        profile = tmp_path / "profile"
        dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
        shot = tmp_path / "dashboard.png"
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1400,900", url], capture_output=True, timeout=120, check=True)
    finally:
        server.should_exit = True
    for hub in relay.topology.hubs.values():
        assert hub.name in dom, f"hub {hub.hub_id} missing from the page"
    assert "RECIPIENT_UNKNOWN" in dom
    assert "999.99.99.H99" in dom and "1 parked message(s)" in dom
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = os.environ.get("LIENTHONG_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / "dashboard.png")


STATE_COLOURS = {"ok": (46, 125, 50), "warning": (249, 168, 37)}
PASSED_BLUE = (21, 101, 192)


@pytest.fixture(scope="module")
def traffic(relay: Relay) -> str:
    """One document delivered and one refused (RECIPIENT_UNKNOWN, parked at H41), both shown by
    the management API; returns the parked message's digest."""
    doc = relay.document(SENDER, [RECIPIENT], subject="báo cáo tuần")
    relay.client(SENDER).send(doc)
    bad = relay.document(SENDER, ["999.99.99.H99"], subject="nơi nhận không có")
    relay.client(SENDER).send(bad)
    assert len(relay.take(RECIPIENT, 1, accept=lambda i: i.body == doc)) == 1
    relay.wait_idle()
    from broker.core import wire
    from broker.ops import queues
    deadline = time.monotonic() + 30
    while next(h for h in queues.status(relay.settings) if h.hub == "H41").parked < 1:
        assert time.monotonic() < deadline, "the parked message never showed in the management API"
        time.sleep(1)
    return wire.message_id(bad)


def _chromium(chromium: str, url: str, profile: Path, shot: Path, accept: str) -> str:
    """The page's DOM as Chromium renders it for a browser asking for ``accept``, and its screenshot."""
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--accept-lang={accept}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1400,1500", url], capture_output=True,
                   timeout=120, check=True)
    return dom


def _colours(shot: Path) -> dict[tuple[int, int, int], int]:
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    return {colour: n for n, colour in image.getcolors(image.width * image.height) or []}


@pytest.mark.parametrize(("accept", "words"), [
    ("vi-VN,vi", {"title": "lienthong: các trục liên thông", "tree": "Sơ đồ các trục",
                  "traffic": "Lưu lượng 6 giờ qua", "parked": "Gói tin bị tạm giữ", "ok": "hoạt động bình thường",
                  "warning": "cần xem xét", "warned": r"\d gói tin bị tạm giữ"}),
    ("en-US,en", {"title": "lienthong: hubs", "tree": "The hub tree", "traffic": "Traffic over the last 6 hours",
                  "parked": "Parked messages", "ok": "working", "warning": "needs attention",
                  "warned": r"\d parked message\(s\)"})])
def test_dashboard_pictures_in_both_languages(relay: Relay, chromium: str, traffic: str, tmp_path: Path,
                                              accept: str, words: dict[str, str]) -> None:
    """Headless Chromium asking for Vietnamese, then English: the page is in that language; the hub
    tree is a picture with every hub, H41 (a parked message) coloured as needing attention and the
    others as working, each state's colour covering a hub's box in the screenshot; the traffic
    chart of H41 has bars; the parked message links to its page with its reason."""
    port, server = serve(create_app(relay.settings))
    lang = accept[:2]
    shot = tmp_path / f"dashboard-{lang}.png"
    try:
        url = f"http://127.0.0.1:{port}/"
        dom = _chromium(chromium, url, tmp_path / "profile", shot, accept)
        detail = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                                 f"--accept-lang={accept}", "--dump-dom", f"{url}parked/H41/{traffic}"],
                                capture_output=True, text=True, timeout=120).stdout
    finally:
        server.should_exit = True
    assert f"<html lang=\"{lang}\">" in dom
    for key in ("title", "tree", "traffic", "parked"):
        assert words[key] in dom, key
    assert re.search(words["warned"], dom)
    svg = dom[dom.index("<svg"):dom.index("</svg>")]
    for hub in relay.topology.hubs.values():
        state = "warning" if hub.hub_id == "H41" else "ok"
        assert f'data-hub="{hub.hub_id}" data-state="{state}"' in svg, hub.hub_id
        assert f"{hub.name}: {words[state]}" in svg
    assert f'href="parked/H41/{traffic}"' in dom
    assert "RECIPIENT_UNKNOWN" in detail and "999.99.99.H99" in detail and f"--digest {traffic[:16]}" in detail
    colours = _colours(shot)
    box = 250 * 62  # a hub's box, in pixels
    assert colours.get(STATE_COLOURS["ok"], 0) > 2 * box, "the three working hubs are not green"
    assert box / 2 < colours.get(STATE_COLOURS["warning"], 0) < 2 * box, "H41 is not the one amber box"
    assert colours.get(PASSED_BLUE, 0) > 30, "no traffic bars"
    keep = os.environ.get("LIENTHONG_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)


def test_dashboard_off_loopback_needs_its_token(relay: Relay) -> None:
    """The finding: bound to another address without a token, anyone sending ``Host: 127.0.0.1``
    got in.  Now such a dashboard refuses to start (USAGE, from the command too); bound to every
    address with a token, a request naming 127.0.0.1 without it gets 401, with it the page."""
    import threading
    import urllib.error
    import urllib.request

    import uvicorn

    from broker.core.errors import UsageError

    with pytest.raises(UsageError):
        create_app(relay.settings, bind="0.0.0.0")
    refused = relay.cli("dashboard", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 2
    assert refused.stderr == "ERROR USAGE: the dashboard on 0.0.0.0, not loopback, needs a token (--token-file)\n"
    create_app(relay.settings, bind="127.0.0.2")  # all of 127/8 is loopback
    app = create_app(relay.settings, bind="0.0.0.0", token="s3cret-token")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        spoof = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": "127.0.0.1"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(spoof, timeout=30)
        assert caught.value.code == 401
        spoof.add_header("Authorization", "Bearer s3cret-token")
        with urllib.request.urlopen(spoof, timeout=60) as page:
            assert page.status == 200 and "Sơ đồ các trục" in page.read().decode()
    finally:
        server.should_exit = True


def test_refusal_reasons_are_explained_in_the_readers_language(relay: Relay, traffic: str) -> None:
    """The reason of a refusal is the English sentence the hub recorded (in its signed audit log,
    in the parked copy's lt-reason header), never rewritten: a Vietnamese reader of the dashboard
    (recent refusals, parked messages, a parked message's page) and of ``lienthong dlq list/show``
    gets the meaning of its code in Vietnamese beside it, the sentence marked as English; an
    English reader gets the sentence alone; ``dlq list --json`` is unchanged for programs."""
    import html
    import json
    import urllib.request

    recorded = "recipient '999.99.99.H99' is not in the agency directory"
    meaning_vi = "Một cơ quan nhận không có trong danh bạ."
    meaning_en = "A recipient agency is not in the agency directory."
    port, server = serve(create_app(relay.settings))

    def page(path: str, accept: str) -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept-Language": accept})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return str(resp.read().decode("utf-8"))

    try:
        vi, en = page("/", "vi-VN,vi"), page("/", "en-US,en")
        detail_vi, detail_en = page(f"/parked/H41/{traffic}", "vi"), page(f"/parked/H41/{traffic}", "en")
    finally:
        server.should_exit = True
    cell = f"<td>{meaning_vi}<br><small lang='en' class='recorded'>{html.escape(recorded)}</small></td>"
    refusals, parked = vi.split("Từ chối gần đây", 1)[1].split("Gói tin bị tạm giữ</h2>", 1)
    assert cell in refusals and cell in parked
    assert f"<td>{html.escape(recorded)}</td>" in en and meaning_vi not in en and meaning_en not in en
    assert f"<th>ý nghĩa</th><td>{meaning_vi}</td>" in detail_vi and html.escape(recorded) in detail_vi
    assert f"<th>meaning</th><td>{meaning_en}</td>" in detail_en

    listed_vi = relay.cli("dlq", "list", "--hub", "H41", "--lang", "vi")
    mine = [line for line in listed_vi.stdout.splitlines() if line.startswith(f"H41       {traffic[:16]}")]
    assert listed_vi.returncode == 0 and len(mine) == 1, listed_vi.stdout + listed_vi.stderr
    assert mine[0].endswith(f"{meaning_vi} Nguyên văn ghi nhận: {recorded}") and "RECIPIENT_UNKNOWN" in mine[0]
    listed_en = relay.cli("dlq", "list", "--hub", "H41", "--lang", "en")
    assert [line for line in listed_en.stdout.splitlines() if line.startswith(f"H41       {traffic[:16]}")][0] \
        .endswith(f" {recorded}") and meaning_en not in listed_en.stdout
    shown = relay.cli("dlq", "show", "H41", traffic[:16], "--lang", "vi")
    assert shown.returncode == 0 and shown.stdout.startswith(f"RECIPIENT_UNKNOWN: {meaning_vi}\n")
    as_json = json.loads(relay.cli("dlq", "list", "--hub", "H41", "--json", "--lang", "vi").stdout)
    assert [p["reason"] for p in as_json if p["digest"] == traffic] == [recorded]
