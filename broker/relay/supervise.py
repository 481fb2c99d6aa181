"""Keeping a hub's worker processes running: one process per slot, started again when it exits."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

from broker.logs import get_logger
from broker.pkcs11 import EXIT_PIN_REFUSED

log = get_logger("lienthong.up")


def start_worker(hub_id: str, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    extra = ["--metrics-port", str(metrics_port)] if metrics_port else []
    return subprocess.Popen([sys.executable, "-m", "broker.cli", "hub", "run", hub_id, *extra])


class Supervisor:
    """Keeps one worker process per slot running: a worker that exits is logged with its exit code
    and started again, after a back-off that doubles (1 s up to ``max_delay``) while it keeps dying
    within ``stable_seconds`` of its start, so a worker that cannot start does not spin.  A worker
    that exits :data:`~broker.pkcs11.EXIT_PIN_REFUSED` (its token refused the PIN) is not started
    again, nor are the other workers of its hub once they exit: each start would be one more wrong
    PIN, and a token locks after a few."""

    def __init__(self, start: Callable[[str, int], subprocess.Popen[bytes]], slots: list[tuple[str, int]], *,
                 stable_seconds: float = 30.0, max_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._clock = clock
        self.stable_seconds, self.max_delay = stable_seconds, max_delay
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes] | None] = {}
        self._started: dict[tuple[str, int], float] = {}
        self._delay: dict[tuple[str, int], float] = {}
        self._due: dict[tuple[str, int], float] = {}
        self.restarts = 0
        self.refused: set[str] = set()
        """Hubs whose token refused the PIN: their workers are not started again."""
        for slot in slots:
            self._launch(slot)

    def _launch(self, slot: tuple[str, int]) -> None:
        self.procs[slot] = self._start(*slot)
        self._started[slot] = self._clock()

    def poll(self) -> None:
        """Notice exits and start what is due; call often (every half second)."""
        now = self._clock()
        for slot, p in list(self.procs.items()):
            if p is None:
                if now >= self._due[slot]:
                    self._launch(slot)
                    self.restarts += 1
                    log.info("worker restarted", hub=slot[0], slot=slot[1], restarts=self.restarts)
                continue
            if p.poll() is None:
                continue
            if p.returncode == EXIT_PIN_REFUSED or slot[0] in self.refused:
                self.refused.add(slot[0])
                del self.procs[slot]
                log.error("worker stopped for good: its token refused the PIN; fix the PIN file, then start it "
                          "again", hub=slot[0], slot=slot[1], exit_code=p.returncode)
                continue
            lived = now - self._started[slot]
            delay = 1.0 if lived >= self.stable_seconds else min(self._delay.get(slot, 0.5) * 2, self.max_delay)
            self._delay[slot] = delay
            self._due[slot] = now + delay
            self.procs[slot] = None
            log.error("worker exited; restarting", hub=slot[0], slot=slot[1], exit_code=p.returncode,
                      lived_seconds=round(lived, 1), in_seconds=delay)

    def stop(self) -> None:
        running = [p for p in self.procs.values() if p is not None]
        for p in running:
            p.terminate()
        for p in running:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
