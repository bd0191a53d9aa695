"""The Dockerfile: hadolint-clean, multi-stage, torch only in the export stage, non-root, health-checked."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.tools import ROOT, need

DOCKERFILE = ROOT / "Dockerfile"


def stages() -> dict[str, str]:
    text = DOCKERFILE.read_text()
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_passes():
    exe = need("hadolint")
    done = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_stages_and_what_each_installs():
    s = stages()
    assert {"export", "runtime-cpu", "runtime-gpu"} <= set(s)
    assert "torch==" in s["export"]
    assert "jepa-export demo" in s["export"]
    # runtimes and the venvs they copy carry no torch
    for name in ("venv-cpu", "venv-gpu", "runtime-cpu", "runtime-gpu"):
        assert "torch" not in s[name].replace("tensorrt", ""), name
        assert "export]" not in s[name], name
    assert '".[cpu,otel,milvus]"' in s["venv-cpu"]
    assert '".[gpu,otel]"' in s["venv-gpu"]
    assert "COPY --from=export /models /models" in s["runtime-cpu"]
    assert "COPY --from=export /models /models" in s["runtime-gpu"]
    assert list(s)[-1] == "runtime-cpu", "a plain `docker build .` must give the CPU runtime"


def test_runtimes_are_non_root_and_health_checked():
    for name in ("runtime-cpu", "runtime-gpu"):
        body = stages()[name]
        user = re.findall(r"^USER\s+(\S+)", body, re.M)
        assert user, name
        assert not user[-1].startswith(("0", "root")), name
        assert re.search(r"^HEALTHCHECK .*\n.*/healthz", body, re.M), name
        assert 'CMD ["jepa-serve", "--host", "0.0.0.0"' in body


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "model_repository", "data", "tests"} <= ignored


def test_no_frontend_fetched_from_a_registry():
    """A `# syntax=` directive makes BuildKit pull that frontend image first: offline builds fail before step one."""
    directives = re.findall(r"^#\s*syntax\s*=.*$", DOCKERFILE.read_text(), re.M | re.I)
    assert not directives, directives


def test_pip_stages_take_the_index_and_ca_from_the_build():
    """Air-gapped builds: every stage that runs pip accepts the index settings and the CA bundle secret."""
    for name, body in stages().items():
        if "pip install" not in body:
            continue
        for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
            assert re.search(rf"^ARG {arg}$", body, re.M), (name, arg)
        runs = re.findall(r"^RUN (.*(?:\\\n.*)*)", body, re.M)
        for run in (r for r in runs if "pip install" in r):
            assert run.startswith("--mount=type=secret,id=pip_cert"), (name, run)
            assert "PIP_CERT=/run/secrets/pip_cert" in run, (name, run)
