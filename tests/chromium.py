"""A page opened in headless Chromium (Debian's `chromium`) through the DevTools protocol: what it requested,
which JavaScript errors it raised, what it shows, and a screenshot. Every host name resolves nowhere, so a page
that needs the network fails visibly rather than fetching quietly."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Opened:
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, the page itself included
    errors: list[str] = field(default_factory=list)  # uncaught exceptions and console errors
    counts: dict[str, int] = field(default_factory=dict)  # CSS selector → how many elements match


def open_page(page: Path, screenshot: Path, selectors: list[str], settle_s: float = 2.0) -> Opened:
    """Load `page`, wait until it has loaded and then `settle_s` for its scripts, count `selectors`, and write a
    full-page PNG."""
    assert CHROMIUM is not None, "chromium is not installed (apt-get install chromium, or make test)"
    profile = tempfile.mkdtemp(prefix="vtax-chromium-")
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert browser.stderr is not None
        endpoint = ""
        give_up = time.monotonic() + 30
        while not endpoint and time.monotonic() < give_up:
            line = browser.stderr.readline()
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            endpoint = match.group(1) if match else ""
        assert endpoint, "chromium did not open its DevTools endpoint"
        return _drive(endpoint, page, screenshot, selectors, settle_s)
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _drive(endpoint: str, page: Path, screenshot: Path, selectors: list[str], settle_s: float) -> Opened:
    browser = websocket.create_connection(endpoint, timeout=30)
    ids = iter(range(1, 10_000))
    events: list[dict[str, Any]] = []

    def call(method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        number = next(ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        browser.send(json.dumps(message))
        while True:
            answer = json.loads(browser.recv())
            if answer.get("id") == number:
                assert "error" not in answer, answer
                return dict(answer.get("result", {}))
            events.append(answer)

    target = call("Target.createTarget", url="about:blank")["targetId"]
    session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Network", "Runtime", "Log", "Page"):
        call(f"{domain}.enable", session)
    call("Page.navigate", session, url=page.resolve().as_uri())
    loaded_by = time.monotonic() + 60  # a page of several MB parses for a while on a busy box
    until = loaded_by
    browser.settimeout(0.2)
    while time.monotonic() < until:
        try:
            event = json.loads(browser.recv())
        except websocket.WebSocketTimeoutException:
            continue
        events.append(event)
        if event.get("method") == "Page.loadEventFired":
            until = min(loaded_by, time.monotonic() + settle_s)  # then the scripts' own work
    assert any(e.get("method") == "Page.loadEventFired" for e in events), "the page never finished loading"
    browser.settimeout(30)
    opened = Opened()
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            opened.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            opened.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            opened.errors.append(params["entry"]["text"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            opened.errors.append(str(params.get("args")))
    for selector in selectors:
        expression = f"document.querySelectorAll({json.dumps(selector)}).length"
        opened.counts[selector] = int(call("Runtime.evaluate", session, expression=expression)["result"]["value"])
    metrics = call("Page.getLayoutMetrics", session)["cssContentSize"]
    shot = call(
        "Page.captureScreenshot",
        session,
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], 16000), "scale": 1},
    )
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    browser.close()
    return opened
