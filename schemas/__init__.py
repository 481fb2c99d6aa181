"""The edXML XSDs (QCVN 102:2016), shipped as package data."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent
