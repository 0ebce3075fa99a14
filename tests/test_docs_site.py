"""The documentation site: it builds with zero warnings, and a real browser finds every page sound.

The site is built once (``python -m sphinx -W``, as CI does) into a temporary
folder and served over HTTP. Headless Chromium (Debian's ``chromium``
package), driven through the DevTools protocol, then opens every page and
checks: it loads, no console error or uncaught exception, no failed request,
every image decodes, every internal link (and its ``#fragment``) resolves,
and the search page finds a term. Set ``LSTMKIT_SCREENSHOTS`` to a folder to
keep screenshots of the home page and a tutorial page, and ``LSTMKIT_DOCS_SITE``
to a site already built with ``sphinx -W`` (CI does) to test it without
building it again.

Needs the ``docs`` extra (Sphinx, MyST, furo, websocket-client); the browser
test also needs a ``chromium`` executable. Without them it skips.
"""
from __future__ import annotations

import base64
import functools
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("furo")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site: ``$LSTMKIT_DOCS_SITE`` when CI has just built it with ``-W``, else built here."""
    prebuilt = os.environ.get("LSTMKIT_DOCS_SITE")
    if prebuilt:
        assert (Path(prebuilt) / "index.html").exists(), f"LSTMKIT_DOCS_SITE={prebuilt} holds no built site"
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-d", str(out / "doctrees"), str(DOCS),
         str(out / "html")],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, f"sphinx -W failed:\n{result.stderr[-8000:]}"
    return out / "html"


def test_every_page_is_built_with_its_outputs(site):
    pages = sorted(DOCS.glob("*.md")) + sorted(DOCS.glob("zh/*.md")) + sorted(DOCS.glob("api/*.md"))
    for page in pages:
        html = site / page.relative_to(DOCS).with_suffix(".html")
        assert html.exists(), f"{page.relative_to(DOCS)} was not built"
    lstm = (site / "inputs-outputs.html").read_text(encoding="utf-8")
    assert "lstmkit-output" in lstm and "(5, 3, 40) (4, 3, 20) (4, 3, 20)" in lstm  # a printed output, shown
    assert re.search(r'<img[^>]+class="lstmkit-figure', lstm)  # a figure drawn by a block, shown


def _public_names():
    import importlib

    import lstmkit

    names = [f"lstmkit.{n}" for n in lstmkit.__all__ if n not in ("utils", "__version__")]
    for name in ("lstmkit.utils.rnn", "lstmkit.train", "lstmkit.testing", "lstmkit.viz", "lstmkit.learn.shapes",
                 "lstmkit.learn.gradcheck", "lstmkit.learn.exercises", "lstmkit.learn.sample",
                 "lstmkit.learn.figures"):
        module = importlib.import_module(name)
        names += [f"{module.__name__}.{n}" for n in module.__all__]
    return names


def test_api_reference_documents_every_public_name(site):
    html = "".join(p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html"))
    missing = [name for name in _public_names() if f'id="{name}"' not in html]
    assert not missing, f"not in the API reference: {missing}"


# ---------------------------------------------------------------- the browser

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, evaluate, collect errors."""

    def __init__(self, profile: Path):
        import websocket

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=1280,1600", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                pytest.skip("chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def _wait_for(self, event, timeout=30):
        deadline = time.monotonic() + timeout
        self.ws.settimeout(timeout)
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self.events.append(message)
            if message.get("method") == event:
                return
        raise TimeoutError(event)

    def open(self, url):
        """Navigate; return the errors the page produced (console, exceptions, failed or 4xx/5xx requests)."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self._wait_for("Page.loadEventFired")
        self.evaluate("new Promise(r => setTimeout(r, 150))")  # let scripts run after load
        return self.errors()

    def errors(self):
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description', p)}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error" and "favicon" not in p["entry"].get("url", ""):
                found.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif method == "Network.responseReceived" and p["response"]["status"] >= 400 \
                    and not p["response"]["url"].endswith("favicon.ico"):
                found.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                found.append(f"request failed: {p.get('errorText')}")
        return found

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium executable (apt-get install chromium)")
    pytest.importorskip("websocket")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def _pages(site: Path) -> list[str]:
    skip = {"_static", "_images", "_sources", "doctrees", "_modules"}
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if not skip & set(p.relative_to(site).parts))


_ids_cache: dict[Path, set] = {}


def _ids(path: Path) -> set:
    if path not in _ids_cache:
        _ids_cache[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))
    return _ids_cache[path]


def test_every_page_loads_without_errors_and_its_links_and_images_work(site, server, browser):
    problems = []
    for page in _pages(site):
        errors = browser.open(server + page)
        problems += [f"{page}: {e}" for e in errors]
        broken = browser.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        problems += [f"{page}: broken image {src}" for src in broken]
        links = browser.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for link in links:
            if not link.startswith(server):
                continue  # external: not checked offline
            parsed = urllib.parse.urlsplit(link)
            target = site / urllib.parse.unquote(parsed.path[1:] or "index.html")
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page}: broken link {link}")
            elif parsed.fragment and target.suffix == ".html" and urllib.parse.unquote(parsed.fragment) not in _ids(target):
                problems.append(f"{page}: link to a missing anchor {link}")
    assert not problems, "\n".join(problems)


def test_search_finds_a_term(site, server, browser):
    assert not browser.open(server + "search.html?q=forget+gate")
    deadline = time.monotonic() + 20
    while "Search finished" not in browser.evaluate("document.body.innerText") and time.monotonic() < deadline:
        time.sleep(0.2)
    results = browser.evaluate("Array.from(document.querySelectorAll('#search-results li a')).map(a => a.href)")
    assert results, "the search page found nothing for 'forget gate'"
    assert any("why-lstm.html" in r for r in results), results


def test_screenshots_of_the_home_page_and_a_tutorial(site, server, browser, tmp_path):
    folder = Path(os.environ.get("LSTMKIT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for page in ("index.html", "why-lstm.html"):
        assert not browser.open(server + page)
        shot = folder / page.replace(".html", ".png")
        browser.screenshot(shot)
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
