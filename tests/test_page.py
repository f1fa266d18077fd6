"""The search page, end to end: a real server on loopback, driven by headless Chromium.

Needs Debian's ``chromium`` package (``apt-get install chromium``; CI installs it). Nothing is
installed or downloaded at run time; without Chromium the tests are skipped.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from service.app import create_app
from service.config import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium); the page test drives it headless",
)


@pytest.fixture(scope="module")
def server(tiny_index, tmp_path_factory):
    """The service on a free loopback port, in a thread of this process."""
    import uvicorn

    root = tmp_path_factory.mktemp("page")
    index = tiny_index
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(index=index, updates_dir=root / "updates"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def render(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran (virtual time lets the searches finish)."""
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def column(dom: str, side: str) -> str:
    start = dom.index(f'id="col-{side}"')
    end = dom.index('id="col-right"') if side == "left" else len(dom)
    return dom[start:end]


def hit_ids(html: str) -> list[str]:
    return re.findall(r'<li class="hit" data-id="([^"]+)"', html)


def test_page_shows_nci_beside_dense_with_snippets(server, tmp_path):
    dom = render(f"{server}/?" + urlencode({"q": "topic 3 kalo", "k": 5}), tmp_path)
    assert 'data-done="1"' in dom
    left, right = column(dom, "left"), column(dom, "right")
    assert len(hit_ids(left)) == 5 and len(hit_ids(right)) == 5
    assert left.count('class="snippet"') == 5 and "beam 10" in left
    # each column shows what the API returns for its method
    for side, method in (("left", "nci"), ("right", "dense")):
        api = httpx.post(
            f"{server}/v1/search", json={"query": "topic 3 kalo", "k": 5, "method": method}
        ).json()
        assert hit_ids(column(dom, side)) == [h["id"] for h in api["results"]], method
    assert "60 documents" in dom and 'class="error"' not in dom


def test_page_method_selector_and_live_additions(server, tmp_path):
    doc = {"_id": "page-new", "title": "Pagetest heading", "text": "xylophonic quartz page document"}
    r = httpx.post(f"{server}/v1/documents", json={"documents": [doc]})
    assert r.status_code == 201
    query = "Pagetest heading. xylophonic quartz page document"
    dom = render(f"{server}/?" + urlencode({"q": query, "k": 3, "left": "nci", "right": "bm25"}), tmp_path)
    left, right = column(dom, "left"), column(dom, "right")
    assert "page-new" in hit_ids(left) and "via dense fallback" in left  # NCI has not learned it
    assert hit_ids(right)[0] == "page-new" and "Pagetest heading" in right
    assert "(1 added, 0 deleted since built)" in dom


def test_page_reports_errors_instead_of_results(server, tmp_path):
    dom = render(f"{server}/?" + urlencode({"q": "x" * 1001}), tmp_path)
    assert 'class="error"' in dom and "limit is 1000" in dom
