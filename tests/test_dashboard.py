"""The operators' dashboard in headless Chromium, on a relay with real traffic."""

from __future__ import annotations

import os
import shutil
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
