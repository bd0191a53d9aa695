"""The provisioned Grafana dashboard against Grafana's own schema, offline: no Grafana runs here (no image, no
Debian package), so the dashboard JSON is type-checked with the TypeScript compiler against `@grafana/schema` at
the version of the compose file's Grafana image (its dashboard type, and the timeseries panel's options and field
config), installed by `make deploy-tools`. Unknown keys, wrong types and missing required fields fail.
What this does not show: that Grafana's provisioning loads the file, or that the queries draw what they should."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT, VENV_BIN

DASHBOARD = ROOT / "deploy/grafana/dashboards/jepa-serve.json"
NODE_TOOLS = VENV_BIN.parent / "tools" / "node"

CHECK = """\
import type { Dashboard, Panel, FieldConfigSource } from '@grafana/schema/dist/esm/raw/dashboard/x/dashboard_types.gen';
import type { Options, FieldConfig } from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
// JSON has no enums: each TypeScript enum of the schema becomes the union of its string values.
type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;
// the dashboard's panels are all timeseries panels: their options and field config get that plugin's types
type TimeSeriesPanel = Omit<Panel, 'options' | 'fieldConfig'> & {
  type: 'timeseries';
  options?: Options;
  fieldConfig?: Omit<FieldConfigSource, 'defaults'> & { defaults: Omit<FieldConfigSource['defaults'], 'custom'> & { custom?: FieldConfig } };
};
export const dashboard: Json<Omit<Dashboard, 'panels'> & { panels: TimeSeriesPanel[] }> = DASHBOARD;
"""


def grafana_version() -> str:
    match = re.search(r"image: grafana/grafana:([0-9.]+)", (ROOT / "docker-compose.yml").read_text())
    assert match, "docker-compose.yml names no grafana/grafana image"
    return match.group(1)


def type_check(dashboards: dict[str, dict], workdir: Path) -> dict[str, str]:
    """One tsc run over one file per dashboard; the errors tsc reports for each (empty: it conforms)."""
    tsc = NODE_TOOLS / "node_modules" / ".bin" / "tsc"
    package = NODE_TOOLS / "node_modules" / "@grafana" / "schema" / "package.json"
    if not tsc.exists() or not package.exists():
        pytest.skip("tsc and @grafana/schema are not installed (`make deploy-tools` installs them with npm)")
    installed = json.loads(package.read_text())["version"]
    assert installed == grafana_version(), (
        f"@grafana/schema {installed} installed, compose runs Grafana {grafana_version()}"
    )
    (workdir / "node_modules").symlink_to(NODE_TOOLS / "node_modules")
    for name, dashboard in dashboards.items():
        (workdir / f"{name}.ts").write_text(CHECK.replace("DASHBOARD", json.dumps(dashboard, indent=1)))
    (workdir / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "module": "nodenext",
                    "moduleResolution": "nodenext",
                    "target": "es2022",
                    "skipLibCheck": True,
                },
                "files": [f"{name}.ts" for name in dashboards],
            }
        )
    )
    done = subprocess.run(
        [str(tsc), "-p", str(workdir / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
        env={**os.environ, "NODE_OPTIONS": "--max-old-space-size=512"},
    )
    assert done.returncode in (0, 1, 2), done.stdout + done.stderr  # 1/2: errors reported; anything else: tsc broke
    lines = done.stdout.splitlines()
    return {name: "\n".join(line for line in lines if line.startswith(f"{name}.ts(")) for name in dashboards}


def broken(breakage: str) -> dict:
    dashboard = json.loads(DASHBOARD.read_text())
    panel = dashboard["panels"][0]
    if breakage == "unknown_key":
        panel["fieldConfig"]["defaults"]["units"] = panel["fieldConfig"]["defaults"].pop("unit")
    elif breakage == "wrong_type":
        panel["gridPos"]["w"] = str(panel["gridPos"]["w"])
    elif breakage == "missing_required_field":
        del panel["options"]["tooltip"]["sort"]
    return dashboard


def test_dashboard_matches_grafanas_schema_and_the_check_can_fail(tmp_path: Path):
    breakages = ["unknown_key", "wrong_type", "missing_required_field"]
    errors = type_check({"dashboard": json.loads(DASHBOARD.read_text())} | {b: broken(b) for b in breakages}, tmp_path)
    assert errors["dashboard"] == "", errors["dashboard"]
    for breakage in breakages:  # the same check refuses each kind of mistake
        assert errors[breakage], f"{breakage}: tsc found nothing wrong"
