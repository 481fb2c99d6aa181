"""Remove what aborted test runs left on the broker: the vhosts and users of test relays
(namespace ``lt`` + 8 hex digits, see tests/relay.py).  CI runs it first (scripts/test.sh), so a run
starts from the broker a new machine has and can rely on nothing an earlier run made.

    python -m tests.cleanup          # uses LIENTHONG_MGMT_URL
"""

from __future__ import annotations

import os
import re

from broker.relay.provision import Management, q

TEST_NAMESPACE = re.compile(r"^lt[0-9a-f]{8}\.")


def clean(mgmt_url: str) -> tuple[int, int]:
    """Delete test vhosts and users; return how many of each."""
    m = Management(mgmt_url)
    vhosts = [v["name"] for v in m.get("/api/vhosts") if TEST_NAMESPACE.match(v["name"])]
    users = [u["name"] for u in m.get("/api/users") if TEST_NAMESPACE.match(u["name"])]
    for vhost in vhosts:
        m.request("DELETE", f"/api/vhosts/{q(vhost)}")
    for user in users:
        m.request("DELETE", f"/api/users/{q(user)}")
    return len(vhosts), len(users)


if __name__ == "__main__":
    v, u = clean(os.environ["LIENTHONG_MGMT_URL"])
    print(f"cleanup: removed {v} test vhost(s) and {u} test user(s) left by earlier runs")
