"""The national axis samples (shared/interop/edxml-samples), located once for every test."""

from __future__ import annotations

import os
from pathlib import Path

MALFORMED = ("edoc_new.edxml", "edoc.edxml")


def samples_dir() -> Path:
    override = os.environ.get("LIENTHONG_SAMPLES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "interop" / "edxml-samples"


def sample(name: str) -> bytes:
    return (samples_dir() / name).read_bytes()


def sample_names(*, well_formed: bool = True) -> list[str]:
    names = sorted(p.name for p in samples_dir().glob("*.edxml"))
    return [n for n in names if (n not in MALFORMED) == well_formed]
