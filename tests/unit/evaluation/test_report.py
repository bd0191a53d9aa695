"""docs/demo_world.md is what the report writer makes of docs/demo_world.json (no hand edits drift from it)."""

import json

from evaluation.report import write_markdown
from tests.support.paths import DOCS


def test_the_demo_world_report_is_generated_from_its_json(tmp_path):
    written = tmp_path / "demo_world.md"
    write_markdown(written, json.loads((DOCS / "demo_world.json").read_text()))
    assert written.read_text() == (DOCS / "demo_world.md").read_text(), "regenerate: python -m evaluation --markdown-only"
