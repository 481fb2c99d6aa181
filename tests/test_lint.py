"""The code base stays lint-clean (ruff) and strictly typed (mypy --strict on broker/ and adapters/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    """ruff finds nothing in the package, tests and benchmarks (rules in pyproject.toml)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "broker", "adapters", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    """mypy --strict (configured in pyproject.toml) passes on broker/ and adapters/."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
