"""Drive headless Chromium over the DevTools protocol (a websocket; no node, no driver binary).

    with Chromium() as browser:
        page = browser.open(path)              # file:// URL; console errors are collected
        info = page.wait_for(JS_EXPRESSION)    # polls until the expression is truthy
        page.screenshot(path_png)
        page.click(x, y)                       # a real mouse click, at viewport coordinates
        page.errors                            # console errors and uncaught exceptions

Used by the dashboard's browser tests and by benchmarks/dashboard_scale.py.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from websockets.sync.client import connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("VT_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session
        self.errors: list[str] = []
        self.console: list[str] = []

    def send(self, method: str, **params):
        return self.browser.send(method, session=self.session, **params)

    def _event(self, msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console.append(f"{p.get('type')}: {text}")
            if p.get("type") in ("error", "assert"):
                self.errors.append(f"console.{p.get('type')}: {text}")
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")

    def evaluate(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError(f"{expression[:80]}...: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout} s: {expression[:120]}; errors: {self.errors}")
            time.sleep(interval)

    def click(self, x: float, y: float) -> None:
        """A left click at viewport coordinates (CSS px), as a user's mouse would make it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        params = {"format": "png"}
        if full_page:
            m = self.send("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no chromium found (apt-get install chromium, or set VT_CHROMIUM)")
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._pages: dict[str, Page] = {}

    def __enter__(self) -> Chromium:
        self._profile = tempfile.mkdtemp(prefix="vt-chromium-")
        self.proc = subprocess.Popen(
            [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url, deadline, seen = None, time.monotonic() + 60, []
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m.group(1) if m else None
        if url is None:
            self.proc.kill()
            raise RuntimeError(f"chromium did not start: {''.join(seen)[-2000:]}")
        self.ws = connect(url, max_size=2**28, open_timeout=30, proxy=None)  # loopback: never via a proxy
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait()
            shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, session: str | None = None, timeout: float = 120.0, **params):
        i = next(self._ids)
        msg = {"id": i, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == i:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            page = self._pages.get(reply.get("sessionId"))
            if page is not None:
                page._event(reply)

    def open(self, target: str | Path, width: int | None = None, height: int | None = None) -> Page:
        """A new tab showing ``target``, its viewport ``width`` x ``height`` CSS px (default: the browser's)."""
        remote = str(target).startswith(("http:", "https:", "file:"))
        url = str(target) if remote else Path(target).resolve().as_uri()
        tid = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=tid, flatten=True)["sessionId"]
        page = self._pages[session] = Page(self, session)
        for domain in ("Runtime", "Log", "Page"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride", width=width or self.width, height=height or self.height,
                  deviceScaleFactor=1, mobile=False)
        page.send("Page.navigate", url=url)
        return page


# Truthy once Bokeh's document is idle (every root view built and painted): the named views.
BOKEH_READY = """
(() => {
  if (!window.Bokeh || !Bokeh.documents || Bokeh.documents.length === 0 || !Bokeh.index) return null;
  const doc = Bokeh.documents[0];
  if (!doc.is_idle) return null;
  const views = [...Bokeh.index.all_views()];
  return {names: views.map((v) => v.model.name).filter((n) => n),
          n_views: views.length, n_roots: doc.roots().length};
})()
"""


def render_checked(path: str | Path, screenshot: str, tmp_path: Path) -> dict:
    """Open a standalone page in headless Chromium, wait until Bokeh is idle, save a screenshot (to
    $VT_SCREENSHOTS or ``tmp_path``) and fail on any console error; the BOKEH_READY info. Skips
    where no chromium exists (fails instead when VT_REQUIRE_BROWSER is set)."""
    import pytest

    if find_chromium() is None:
        if os.environ.get("VT_REQUIRE_BROWSER"):
            pytest.fail("VT_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium, or set VT_CHROMIUM)")
    with Chromium() as browser:
        page = browser.open(path)
        info = page.wait_for(BOKEH_READY)
        page.screenshot(Path(os.environ.get("VT_SCREENSHOTS", str(tmp_path))) / screenshot)
        assert not page.errors, page.errors
    return info
