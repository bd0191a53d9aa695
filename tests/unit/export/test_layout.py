"""The manifest contract is a leaf that export/ and service/ both import; export/ never imports the service."""

import ast
import sys
from pathlib import Path

from tests.support.paths import ROOT


def _imported_packages(folder: Path) -> dict[str, set[str]]:
    """Per module of `folder`: the top-level packages it imports (absolute imports, wherever they are written)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_export_imports_nothing_from_the_service():
    imports = _imported_packages(ROOT / "export")
    assert "contract" in imports["export/pipeline.py"]
    assert {module for module, names in imports.items() if "service" in names} == set()


def test_the_contract_imports_only_the_standard_library_and_pydantic():
    allowed = set(sys.stdlib_module_names) | {"pydantic", "contract", "__future__"}
    imports = _imported_packages(ROOT / "contract")
    assert "contract/manifest.py" in imports
    assert {module: names - allowed for module, names in imports.items() if names - allowed} == {}
