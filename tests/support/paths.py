"""Where the project's folders are, for tests that read sources and docs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
DOCS = ROOT / "docs"
