"""Headless Chromium (Debian's package) driven over the DevTools protocol, with no way off 127.0.0.1.

The same flags as tests/e2e/test_docs_browser.py: every host but 127.0.0.1 fails to resolve, so a page that needed
a CDN or a font service would break. The protocol is JSON over one WebSocket (the `websockets` package, the
client's own dependency): open a tab, navigate, evaluate JavaScript, choose files for an <input type=file>, take a
screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-background-networking", "--disable-extensions", "--disable-sync", "--mute-audio",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


class BrowserError(AssertionError):
    pass


class Chromium:
    """One headless Chromium with one tab: `with Chromium(workdir, (1280, 900)) as tab: tab.open(url)`."""

    def __init__(self, workdir: Path, window: tuple[int, int] = (1280, 900), start_timeout_s: float = 60) -> None:
        self.events: list[dict[str, Any]] = []  # protocol events not yet waited for
        self.console: list[str] = []  # the page's console messages and uncaught exceptions
        profile = workdir / "chromium-profile"
        self.log = workdir / "chromium.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [CHROMIUM, *OFFLINE, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                 f"--window-size={window[0]},{window[1]}", "about:blank"],
                stdout=out, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"  # written by Chromium once it listens: "<port>\n<path>"
        deadline = time.monotonic() + start_timeout_s
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"chromium did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        self.next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def call(self, method: str, session: bool = False, timeout_s: float = 120, **params: Any) -> dict[str, Any]:
        """One protocol command; its result (events that arrive meanwhile are kept for `wait_event`)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=timeout_s))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply["result"]
            self._event(reply)

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("method") == "Runtime.consoleAPICalled":
            args = event["params"]["args"]
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif event.get("method") == "Runtime.exceptionThrown":
            self.console.append("exception: " + json.dumps(event["params"]["exceptionDetails"])[:500])
        self.events.append(event)

    def wait_event(self, method: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {method} in {timeout_s} s")
            self._event(json.loads(self.ws.recv(timeout=left)))

    def open(self, url: str) -> None:
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout_s: float = 60) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.call("Runtime.evaluate", session=True, timeout_s=timeout_s + 5, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(details.get("exception", {}).get("description") or json.dumps(details)[:800])
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout_s: float = 60) -> Any:
        """Wait in the page until `condition` (a JavaScript expression) is truthy; its value."""
        script = f"""new Promise((resolve, reject) => {{
            const started = Date.now();
            (function check() {{
                let value;
                try {{ value = ({condition}); }} catch (error) {{ value = undefined; }}
                if (value) resolve(value);
                else if (Date.now() - started > {timeout_s * 1000}) reject(new Error("timed out waiting for: " +
                    {json.dumps(condition)} + "; status: " + document.getElementById("status")?.textContent));
                else setTimeout(check, 50);
            }})();
        }})"""
        return self.evaluate(script, timeout_s)

    def choose_files(self, selector: str, paths: list[Path]) -> None:
        """What a user picking files in the <input type=file> at `selector` does."""
        root = self.call("DOM.getDocument", session=True)["root"]["nodeId"]
        node = self.call("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element {selector}")
        self.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[str(p) for p in paths])

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
