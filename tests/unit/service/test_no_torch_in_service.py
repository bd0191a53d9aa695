import re
import subprocess
import sys

from tests.support.paths import SERVICE


def test_service_sources_never_import_torch():
    pattern = re.compile(r"^\s*(import torch|from torch\b|import models\b|from models\b|from export\b|import export\b)", re.M)
    offenders = [str(p) for p in SERVICE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_importing_and_building_the_app_loads_no_torch():
    code = "import sys; from service.app import create_app; create_app(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SERVICE.parent)
    assert out.stdout.strip() == "False"
