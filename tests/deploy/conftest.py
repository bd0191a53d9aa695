"""The compose topology as real processes on this machine: redis-server, two jepa-serve replicas, nginx.

It mirrors docker-compose.yml: the replicas get the same JEPA_* settings
(keys, Redis URL, rate limit, storage), and nginx runs deploy/nginx/nginx.conf
itself, with only the upstream addresses, the listen port and the paths a
non-container run needs rewritten.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.security import hash_key, new_key
from tests.deploy.tools import ROOT, start_server, tool, wait_port
from tests.support.toolkit import free_port, stop

KEYS = {name: new_key() for name in ("admin", "reader", "writer", "limited")}
SCOPES = {"admin": "read,write,ops", "reader": "read", "writer": "write", "limited": "read"}
RATE_LIMIT = 40
RATE_WINDOW_S = 3600  # long: the burst below never straddles a window boundary, even on a loaded machine
MAX_BODY_BYTES = 300_000


@dataclass
class Cluster:
    lb: str
    replicas: dict[str, str]
    processes: dict[str, subprocess.Popen]
    redis_url: str
    workdir: Path
    keys: dict[str, str] = field(default_factory=lambda: KEYS)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


def render_nginx(conf: str, upstreams: dict[str, int], listen: int, workdir: Path) -> str:
    """deploy/nginx/nginx.conf for a run outside a container."""
    for name, port in upstreams.items():
        conf, n = re.subn(rf"server {name}:8000", f"server 127.0.0.1:{port}", conf)
        assert n == 1, f"{name} is not an upstream of deploy/nginx/nginx.conf"
    conf, n = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen};", conf)
    assert n == 1
    temp = "".join(
        f"    {kind}_temp_path {workdir}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("http {\n", "http {\n" + temp, 1)
    main = f"pid {workdir}/nginx.pid;\n" + ("user root;\n" if os.geteuid() == 0 else "")
    return main + conf


@pytest.fixture(scope="session")
def cluster(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    redis_server, nginx = tool("redis-server"), tool("nginx")
    if redis_server is None or nginx is None:
        pytest.skip(f"the topology needs redis-server and nginx; missing: "
                    f"{[n for n, t in (('redis-server', redis_server), ('nginx', nginx)) if t is None]}")
    workdir = tmp_path_factory.mktemp("cluster")
    processes: dict[str, subprocess.Popen] = {}
    try:
        redis_port = free_port()
        # as in docker-compose.yml: AOF, fsync on every write
        processes["redis"] = subprocess.Popen(
            [
                redis_server,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                str(workdir),
            ],
            stdout=open(workdir / "redis.log", "w"),  # noqa: SIM115 - the child writes to it for its whole life
            stderr=subprocess.STDOUT,
        )
        wait_port(redis_port, processes["redis"], "redis-server")
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {
            "JEPA_API_KEYS": ";".join(f"{n}:{hash_key(k)}:{SCOPES[n]}" for n, k in KEYS.items()),
            "JEPA_STORAGE": "redis", "JEPA_REDIS_URL": redis_url, "JEPA_RATE_LIMIT_REDIS_URL": redis_url,
            "JEPA_RATE_LIMIT_REQUESTS": str(RATE_LIMIT), "JEPA_RATE_LIMIT_WINDOW_S": str(RATE_WINDOW_S),
            "JEPA_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "JEPA_LOG_FORMAT": "json",
        }
        replicas = {}
        for name in ("api-1", "api-2"):
            processes[name], replicas[name] = start_server(demo_repository, workdir, env, name)
        lb_port = free_port()
        conf = render_nginx((ROOT / "deploy/nginx/nginx.conf").read_text(),
                            {n: int(u.rsplit(":", 1)[1]) for n, u in replicas.items()}, lb_port, workdir)
        (workdir / "nginx.conf").write_text(conf)
        processes["lb"] = subprocess.Popen(
            [
                nginx,
                "-p",
                str(workdir),
                "-c",
                str(workdir / "nginx.conf"),
                "-e",
                str(workdir / "nginx-error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=open(workdir / "nginx-access.log", "w"),  # noqa: SIM115 - the child writes to it for its whole life
            stderr=subprocess.STDOUT,
        )
        wait_port(lb_port, processes["lb"], "nginx")
        yield Cluster(lb=f"http://127.0.0.1:{lb_port}", replicas=replicas, processes=processes,
                      redis_url=redis_url, workdir=workdir)
    finally:
        for process in reversed(list(processes.values())):
            stop(process)
