"""Every relative link and every file path named in README.md and docs/ exists in the tree."""

import re
from pathlib import Path

import pytest

from tests.support.paths import DOCS, ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path in backticks that starts in one of the project's folders (a bare file name is too often a run's output)
TOP = ("service", "export", "models", "evaluation", "loadtests", "tests", "docs", "deploy", ".ci")
NAMED = re.compile(r"`((?:%s)/[\w./-]*)`" % "|".join(re.escape(t) for t in TOP))
# written at run time (git-ignored): named in the docs as where output goes, not shipped
GENERATED = ("reports/", "model_repository/", "data/", ".venv/")
# copies of load-test runs' report.md: their links point into the run's folder, of which only the report, its
# summary and a few plots were kept (docs/loadtest.md says so); the runner's template is tested instead
COPIED_RUN_REPORTS = {p for p in DOCS.rglob("report.md") if (p.parent / "summary.json").exists()}
PAGES = [p for p in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))] if p not in COPIED_RUN_REPORTS]


def _relative_links(page: Path) -> list[str]:
    links = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s), mailto, in-page anchors
        links.append(target.split("#", 1)[0])
    return links


def _named_paths(page: Path) -> list[str]:
    names = []
    for name in NAMED.findall(page.read_text()):
        if "*" in name or "<" in name or name.startswith(GENERATED):
            continue
        names.append(name.rstrip("/.,"))
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_named_files_exist(page: Path):
    missing = [link for link in _relative_links(page) if not (page.parent / link).exists()]
    missing += [name for name in _named_paths(page) if not ((ROOT / name).exists() or (page.parent / name).exists())]
    assert not missing, f"{page.relative_to(ROOT)} names what is not in the tree: {missing}"


def test_the_checks_see_links_and_paths():
    readme = ROOT / "README.md"
    assert "docs/errors.md" in _relative_links(readme)
    assert "service/settings.py" in _named_paths(readme)
    assert len(COPIED_RUN_REPORTS) <= 6  # only the copied runs are left out
