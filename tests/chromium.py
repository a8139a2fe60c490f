"""Open a page in headless Chromium and read what it rendered, over the DevTools protocol on a pipe (no extra package).

    python tests/chromium.py REPORT/index.html --out docs/report   # docs/report-desktop.png, docs/report-phone.png

`Browser.open(path, width, height)` loads a local page at a viewport size; `inspect_page` returns what the report test
checks (headings, table rows, videos and whether each plays); `screenshot` writes the viewport as PNG.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DESKTOP, PHONE = (1280, 900), (390, 844)


def find_chromium() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


class Browser:
    """One headless Chromium, driven through --remote-debugging-pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout, self.next_id, self.session = timeout, 0, None
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def wire() -> None:  # in the child, before exec: the pipe ends on the fds Chromium expects (via fresh
            ends = os.dup(to_child), os.dup(from_child)  # copies: either may already sit on fd 3 or 4)
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.profile = tempfile.mkdtemp(prefix="loopnav-chromium-")
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
             "--no-first-run", "--remote-debugging-pipe", "--autoplay-policy=no-user-gesture-required",
             f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self.next_id

    def _messages(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                yield json.loads(raw)
            if not select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raise TimeoutError(f"no answer from chromium within {self.timeout} s")

    def call(self, method: str, params: dict | None = None, page: bool = True) -> dict[str, Any]:
        """Send a command (to the page's session unless page=False) and return its result."""
        wanted = self._send(method, params, self.session if page else None)
        for message in self._messages():
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise AssertionError("unreachable")

    def wait_event(self, name: str) -> dict[str, Any]:
        for message in self._messages():
            if message.get("method") == name:
                return message.get("params", {})
        raise AssertionError("unreachable")

    def open(self, path: Path, width: int, height: int) -> None:
        """Load a local page at this viewport size (a phone width emulates a mobile screen)."""
        if self.session is None:
            target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     page=False)["sessionId"]
            self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": width < 600})
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, at: str | None = None) -> Path:
        """The viewport as PNG, scrolled to the top or to the element with id `at`."""
        self.evaluate(f"document.getElementById({json.dumps(at)}).scrollIntoView()" if at else "window.scrollTo(0, 0)")
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Play every video (muted) until it has decoded a frame, or 20 s pass; then report the page as plain data.
INSPECT = """
(async () => {
  const videos = Array.from(document.querySelectorAll("video"));
  await Promise.all(videos.map(v => new Promise(done => {
    const finish = () => done();
    setTimeout(finish, 20000);
    v.addEventListener("error", finish, {once: true});
    v.addEventListener("timeupdate", () => { if (v.currentTime > 0) finish(); });
    v.preload = "auto";
    v.play().catch(finish);
  })));
  const text = el => el.textContent.trim();
  return {
    title: document.title,
    headings: Array.from(document.querySelectorAll("h2, h3")).map(text),
    models: Array.from(document.querySelectorAll("table.sortable tbody td.label:first-child")).map(text),
    cells: Array.from(document.querySelectorAll("[data-cell]")).map(el => el.dataset.cell),
    images: Array.from(document.images).map(img => ({src: img.getAttribute("src"), width: img.naturalWidth})),
    videos: videos.map(v => ({src: v.getAttribute("src"), cell: v.closest("[data-cell]").dataset.cell,
                              readyState: v.readyState, duration: v.duration, currentTime: v.currentTime,
                              width: v.videoWidth, error: v.error && v.error.code})),
    scrollWidth: document.documentElement.scrollWidth,
  };
})()
"""


def inspect_page(browser: Browser) -> dict[str, Any]:
    return browser.evaluate(INSPECT)


def screenshots(page: Path, out_prefix: Path, executable: str | None = None) -> dict[str, Any]:
    """Desktop and phone screenshots of `page` (<prefix>-desktop.png, <prefix>-phone.png) and the page's state."""
    with Browser(executable or find_chromium()) as browser:
        browser.open(page, *DESKTOP)
        state = inspect_page(browser)
        browser.screenshot(Path(f"{out_prefix}-desktop.png"))
        browser.open(page, *PHONE)
        browser.screenshot(Path(f"{out_prefix}-phone.png"))
        state["phone_scroll_width"] = inspect_page(browser)["scrollWidth"]
    return state


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="prefix of the two PNGs")
    args = parser.parse_args()
    found = screenshots(args.page, args.out)
    print(json.dumps({k: v for k, v in found.items() if k != "images"}, indent=1)[:4000])
