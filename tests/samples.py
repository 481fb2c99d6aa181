"""The national axis samples, carried by the repository (tests/data/edxml-samples, see its README)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MALFORMED = ("edoc_new.edxml", "edoc.edxml")
SAMPLES = Path(__file__).resolve().parent / "data" / "edxml-samples"


def samples_dir() -> Path:
    return SAMPLES


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_names(*, well_formed: bool = True) -> list[str]:
    names = sorted(p.name for p in SAMPLES.glob("*.edxml"))
    return [n for n in names if (n not in MALFORMED) == well_formed]


def pinned() -> dict[str, str]:
    """file name -> SHA-256 recorded in SHA256SUMS when the samples were copied."""
    lines = (SAMPLES / "SHA256SUMS").read_text(encoding="ascii").splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def digest(name: str) -> str:
    return hashlib.sha256(sample(name)).hexdigest()
