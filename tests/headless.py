"""Test helper: load a local HTML page in headless Chromium and report what the browser saw.

Talks the Chrome DevTools protocol over --remote-debugging-pipe (NUL-separated JSON on
fds 3 and 4), so it needs only the standard library and the `chromium` binary. Collects
console errors, uncaught exceptions, log errors and every network request the page made.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
         # WebGL plots (3-D scatter, parallel coordinates) need a GL: SwiftShader renders in software
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)  # console.error, exceptions, log entries at level error
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    state: dict = field(default_factory=dict)  # what the `probe` JavaScript expression returned


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int):
        self.w, self.r, self.buf, self.next_id = write_fd, read_fd, b"", 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for m in self._read(deadline):
                if m.get("id") == self.next_id:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.events.extend(self._read(deadline, block=False))

    def _read(self, deadline: float, block: bool = True) -> list[dict]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                if block:
                    raise TimeoutError("chromium did not answer in time")
                return []
            ready, _, _ = select.select([self.r], [], [], min(left, 0.1))
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe (crashed?)")
                self.buf += chunk
            elif not block:
                return []
        *messages, self.buf = self.buf.split(b"\0")
        return [json.loads(m) for m in messages if m]


def load_page(path: Path, *, probe: str, ready: str, screenshot: Path | None = None, width: int = 1400,
              height: int = 3000, timeout: float = 60) -> PageReport:
    """Open file `path`, wait until JS `ready` is true, evaluate `probe`, optionally save a PNG screenshot."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium binary on PATH")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds() -> None:
        # the protocol's fds are fixed: chromium reads commands on 3 and writes on 4
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    with tempfile.TemporaryDirectory(prefix="cspnas-chromium-") as profile:
        proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # close_fds=False: our dup2'ed 3 and 4 must survive; Python's own fds are close-on-exec anyway
            preexec_fn=child_fds, close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(to_chrome_w, from_chrome_r)
        try:
            return _drive(pipe, path, probe, ready, screenshot, width, height, timeout)
        finally:
            try:
                pipe.send("Browser.close", timeout=5)
            except Exception:  # noqa: BLE001 - it may already be gone
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_chrome_w)
            os.close(from_chrome_r)


def _drive(pipe: _Pipe, path: Path, probe: str, ready: str, screenshot: Path | None, width: int, height: int,
           timeout: float) -> PageReport:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
        pipe.send(method, session=session)
    pipe.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    deadline = time.monotonic() + timeout
    while True:
        value = pipe.send("Runtime.evaluate", {"expression": f"Boolean({ready})", "returnByValue": True},
                          session=session)["result"].get("value")
        if value:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"page not ready after {timeout}s: {ready}")
        pipe.pump(0.25)
    pipe.pump(1.0)  # let late errors (async plot promises) arrive
    state = pipe.send("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
    report = PageReport(state=state["result"].get("value") or {})
    if screenshot is not None:
        # grow the viewport to the whole page so the screenshot shows every plot
        full = pipe.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                              "returnByValue": True}, session=session)["result"].get("value")
        if isinstance(full, int) and full > height:
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": full, "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.pump(1.0)
        png = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=60)["data"]
        screenshot.write_bytes(base64.b64decode(png))
    for ev in pipe.events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = (str(a.get("value", a.get("description", ""))) for a in p["args"])
            report.errors.append("console: " + " ".join(args))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            report.errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            report.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            report.requests.append(p["request"]["url"])
    return report
