"""The probes of `deploy/smoke.sh` against a running compose stack (standard library only).

Each probe prints one line and adds a row to the report; the first failure stops the run (exit 1).
  1. /readyz through nginx is 200
  2. /embed through nginx: 401 without a key, 200 with the keygen key
  3. a write through api-1 is read through api-2 (the Redis storage backend), and through nginx
  4. Prometheus: every target up
  5. `docker-compose stop api-2` while requests keep going through nginx: none fails; then it starts again
  6. `docker-compose restart redis` while a writer keeps writing: every acknowledged write is there afterwards
  7. a replica restarted while Redis is stopped: waits (/readyz says why), exits 75, is restarted by Docker, and
     is healthy once Redis is back
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

COLLECTION = "smoke"
DIM = 4


def png(width: int = 64, height: int = 64) -> bytes:
    """A small RGB gradient PNG, written by hand (no Pillow on the host is assumed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def call(
    url: str, method: str = "GET", body: dict | None = None, key: str | None = None, timeout: float = 30
) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Stack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.lb = args.lb
        self.prometheus = args.prometheus
        self.key = args.key
        self.compose = shlex.split(args.compose)
        self.docker = args.docker

    def compose_run(self, *argv: str, timeout: float = 180) -> str:
        done = subprocess.run([*self.compose, *argv], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def in_replica(self, replica: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        """One request made inside a replica's container to its own port (the replicas publish none)."""
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            "method, path, body, key = json.loads(sys.argv[1])\n"
            "req = urllib.request.Request('http://127.0.0.1:8000' + path, method=method,\n"
            "    data=json.dumps(body).encode() if body is not None else None,\n"
            "    headers={'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key})\n"
            "try:\n    r = urllib.request.urlopen(req, timeout=30); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n"
        )
        out = self.compose_run("exec", "-T", replica, "python", "-c", code, json.dumps([method, path, body, self.key]))
        status, _, text = out.partition("\n")
        try:
            return int(status), json.loads(text)
        except ValueError:
            return int(status), text

    def statuses_in_replica(self, replica: str, paths: list[str]) -> list[int]:
        """The status of a GET of each path, made inside one replica's container (one `exec` for all)."""
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            "paths, key = json.load(sys.stdin)\nout = []\n"
            "for path in paths:\n"
            "    req = urllib.request.Request(\n"
            "        'http://127.0.0.1:8000' + path, headers={'Authorization': 'Bearer ' + key})\n"
            "    try:\n        out.append(urllib.request.urlopen(req, timeout=30).status)\n"
            "    except urllib.error.HTTPError as e:\n        out.append(e.code)\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [*self.compose, "exec", "-T", replica, "python", "-c", code],
            input=json.dumps([paths, self.key]),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"exec in {replica}: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)

    def healthy(self, service: str) -> bool:
        container = self.compose_run("ps", "-q", service).strip()
        if not container:
            return False
        done = subprocess.run(
            [self.docker, "inspect", "-f", "{{.State.Health.Status}}", container], capture_output=True, text=True
        )
        return done.stdout.strip() == "healthy"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def probe_ready(stack: Stack) -> str:
    status, body = call(f"{stack.lb}/readyz")
    assert status == 200, (status, body)
    return f"200, phase {body['phase']}, models {list(body['models'])}"


def probe_embed(stack: Stack) -> str:
    payload = {"inputs": [{"image": base64.b64encode(png()).decode()}]}
    anonymous, body = call(f"{stack.lb}/embed", "POST", payload)
    assert anonymous == 401, (anonymous, body)
    keyed, body = call(f"{stack.lb}/embed", "POST", payload, stack.key)
    assert keyed == 200, (keyed, body)
    return f"without key {anonymous}, with key {keyed} (dim {len(body['embeddings'][0])})"


def probe_shared_write(stack: Stack) -> str:
    status, body = stack.in_replica("api-1", "PUT", f"/collections/{COLLECTION}", {"dim": DIM})
    assert status in (200, 201), (status, body)
    vector = [0.0, 1.0, 0.0, 0.0]
    status, body = stack.in_replica(
        "api-1", "POST", f"/collections/{COLLECTION}/points", {"ids": ["written-on-api-1"], "vectors": [vector]}
    )
    assert status == 200, (status, body)
    read = {}
    for replica in ("api-2", "api-1"):
        deadline = time.monotonic() + 10
        while True:
            status, body = stack.in_replica(replica, "GET", f"/collections/{COLLECTION}/points/written-on-api-1")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, (replica, status, body)
        assert body["vector"] == vector, (replica, body)
        read[replica] = status
    status, body = call(f"{stack.lb}/search", "POST", {"collection": COLLECTION, "vector": vector, "k": 1}, stack.key)
    assert status == 200, (status, body)
    assert body["hits"][0]["id"] == "written-on-api-1", body
    return f"PUT + upsert on api-1: 200; GET on api-2: {read['api-2']}; search through nginx: top hit found"


def probe_prometheus(stack: Stack) -> str:
    def all_up() -> bool:
        status, body = call(f"{stack.prometheus}/api/v1/targets")
        targets = body["data"]["activeTargets"] if status == 200 else []
        all_up.seen = {t["labels"]["instance"]: t["health"] for t in targets}
        return len(targets) >= 3 and all(h == "up" for h in all_up.seen.values())

    all_up.seen = {}
    try:
        waited = wait_for(all_up, 90, "every Prometheus target up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {all_up.seen}") from None
    return f"{all_up.seen} (after {waited:.0f} s)"


def keep_requesting(stack: Stack, stop: threading.Event, outcomes: list[tuple[int, str]], per_second: float) -> None:
    """Searches through nginx at a steady pace (the deployed rate limit, 100 a second per key, stays far off)."""
    vector = [1.0, 0.0, 0.0, 0.0]
    next_at = time.monotonic()
    while not stop.is_set():
        status, body = call(
            f"{stack.lb}/search", "POST", {"collection": COLLECTION, "vector": vector, "k": 1}, stack.key
        )
        outcomes.append((status, "" if status == 200 else str(body)[:200]))
        next_at += 1 / per_second
        stop.wait(max(0.0, next_at - time.monotonic()))  # pacing, not synchronisation


def probe_replica_stop(stack: Stack) -> str:
    stop, outcomes = threading.Event(), []
    workers = [threading.Thread(target=keep_requesting, args=(stack, stop, outcomes, 10.0)) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2)  # requests flowing to both replicas before the stop
        started = time.monotonic()
        stack.compose_run("stop", "api-2")
        stopped_s = time.monotonic() - started
        during_stop = len(outcomes)
        time.sleep(5)  # and a while with api-2 gone
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    failed = [(s, why) for s, why in outcomes if s != 200]
    container = stack.compose_run("ps", "-q", "api-2").strip()
    exit_code = subprocess.run(
        [stack.docker, "inspect", "-f", "{{.State.ExitCode}}", container], capture_output=True, text=True
    ).stdout.strip()
    stack.compose_run("start", "api-2")
    back = wait_for(lambda: stack.healthy("api-2"), 180, "api-2 healthy again")
    assert outcomes, "no search went through nginx"
    assert not failed, f"{len(failed)} of {len(outcomes)} failed: {sorted(set(failed))[:5]}"
    return (
        f"{len(outcomes)} searches through nginx, {len(outcomes) - during_stop} after the stop, 0 failed; "
        f"stop took {stopped_s:.1f} s, api-2 exit code {exit_code}; api-2 healthy again {back:.0f} s after start"
    )


def probe_redis_restart(stack: Stack) -> str:
    acknowledged: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            point = f"r{n}"
            n += 1
            status, _ = call(
                f"{stack.lb}/collections/{COLLECTION}/points",
                "POST",
                {"ids": [point], "vectors": [[float(n), 1.0, 0.0, 0.0]]},
                stack.key,
            )
            (acknowledged.append(point) if status == 200 else refused.append(status))
            stop.wait(0.05)  # pacing: 20 writes a second at most, under the deployed rate limit

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(2)
        before = len(acknowledged)
        stack.compose_run("restart", "redis")
        wait_for(lambda: stack.healthy("redis"), 60, "redis healthy again")
        time.sleep(3)  # writes after Redis is back
    finally:
        stop.set()
        thread.join()
    assert before > 0, (before, len(acknowledged))
    assert len(acknowledged) > before, (before, len(acknowledged))
    # Durable = in Redis and, once each replica's tailer has caught up after the restart (it backs off up to 5 s
    # while Redis is away), readable on every replica. A write acknowledged while this replica's tailer was still
    # behind (its read-your-writes wait, JEPA_REDIS_ACK_WAIT_S, expired) is caught up here, not lost.
    missing = {replica: list(acknowledged) for replica in ("api-1", "api-2")}
    stopped = time.monotonic()
    while True:
        for replica, points in missing.items():
            statuses = stack.statuses_in_replica(replica, [f"/collections/{COLLECTION}/points/{p}" for p in points])
            missing[replica] = [p for p, s in zip(points, statuses, strict=True) if s != 200]
        if not any(missing.values()) or time.monotonic() - stopped > 60:
            break
        time.sleep(1)
    caught_up = time.monotonic() - stopped
    assert not any(missing.values()), {
        r: f"{len(v)} missing 60 s after the last write, e.g. {v[:5]}" for r, v in missing.items()
    }
    counts = {
        replica: stack.in_replica(replica, "GET", f"/collections/{COLLECTION}")[1]["count"] for replica in missing
    }
    late = stack.compose_run("logs", "--no-color", "api-1", "api-2").count("durable in redis but not yet searchable")
    return (
        f"{len(acknowledged)} writes acknowledged ({before} before the restart), {len(refused)} refused "
        f"during it (statuses {sorted(set(refused))}); every acknowledged point readable on api-1 and on api-2 "
        f"{caught_up:.0f} s after the last write (counts {counts}; {late} acknowledged before the answering "
        f"replica had applied them): 0 lost"
    )


def probe_startup_without_redis(stack: Stack) -> str:
    """A replica (re)started while Redis is down: /readyz says why, the process exits 75 after the give-up time
    (JEPA_STARTUP_GIVE_UP_S, set short by smoke.sh) and Docker restarts it; once Redis is back it becomes ready."""
    container = stack.compose_run("ps", "-q", "api-2").strip()

    def inspect(template: str) -> str:
        return subprocess.run(
            [stack.docker, "inspect", "-f", template, container], capture_output=True, text=True
        ).stdout.strip()

    restarts_before = int(inspect("{{.RestartCount}}"))
    stack.compose_run("stop", "redis")
    try:
        stack.compose_run("restart", "api-2")

        def waiting() -> bool:
            try:
                status, body = stack.in_replica("api-2", "GET", "/readyz")
            except RuntimeError:  # between two runs of the process
                return False
            waiting.body = body
            return status == 503 and isinstance(body, dict) and body.get("phase") == "waiting_for_backend"

        waiting.body = None
        seen = wait_for(waiting, 120, "api-2 /readyz phase waiting_for_backend")
        reason = waiting.body["retrying"]["reason"]
        restarted = wait_for(
            lambda: int(inspect("{{.RestartCount}}")) > restarts_before, 180, "api-2 exited and was restarted by Docker"
        )
        logs = stack.compose_run("logs", "--no-color", "api-2")
        assert "exiting with status 75" in logs, logs[-1500:]
    finally:
        stack.compose_run("start", "redis")
    back = wait_for(lambda: stack.healthy("api-2"), 240, "api-2 healthy once Redis is back")
    status, _ = call(f"{stack.lb}/readyz")
    assert status == 200, status
    return (
        f"Redis stopped, api-2 restarted: /readyz 503 waiting_for_backend after {seen:.0f} s ({reason[:80]}...); "
        f"exit 75 and restart by Docker {restarted:.0f} s later; Redis started: api-2 healthy after {back:.0f} s"
    )


PROBES = [
    ("readyz through nginx", probe_ready),
    ("/embed with and without a key", probe_embed),
    ("write on api-1, read on api-2", probe_shared_write),
    ("Prometheus targets", probe_prometheus),
    ("docker-compose stop api-2 under load", probe_replica_stop),
    ("Redis restart under writes", probe_redis_restart),
    ("replica start while Redis is down", probe_startup_without_redis),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lb", required=True)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--compose", required=True, help="the docker-compose command line of the stack")
    parser.add_argument("--docker", default="docker")
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    stack = Stack(args)
    rows = ["| probe | result | time |", "|---|---|---|"]
    failed = False
    for name, probe in PROBES:
        started = time.monotonic()
        try:
            result = f"passed: {probe(stack)}"
        except Exception as exc:  # the report says what failed, then the run stops
            result, failed = f"FAILED: {type(exc).__name__}: {exc}", True
        line = f"| {name} | {result} | {time.monotonic() - started:.1f} s |"
        print(line, flush=True)
        rows.append(line)
        if failed:
            break
    args.report.write_text("\n".join(rows) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
