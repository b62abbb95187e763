"""A real `streamlit run` on loopback and headless Debian chromium driven by Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(workspace: Path, log: Path) -> Iterator[str]:
    """`streamlit run app.py` in its own process; yields the app's URL once the server answers its health check."""
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    env = {**os.environ, "TRANSFERLAB_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=APP_DIR, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(log.read_text())
        yield url + "/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def launch_chromium(playwright):
    """Debian's headless chromium (never a downloaded one: `make browser` installs it), without network extras."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"])


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, workspace):
    """One server shared by the session's tests (torch is loaded in it after the first page)."""
    with streamlit_server(workspace, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


@pytest.fixture
def fresh_app_url(tmp_path):
    """A server of the test's own that has not run the app yet: what a user meets right after `make run`."""
    (tmp_path / "workspace").mkdir()
    with streamlit_server(tmp_path / "workspace", tmp_path / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    pw = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"chromium not found at {CHROMIUM}; `make test` installs it (make browser)")
        pytest.skip("chromium not installed (run `make browser`)")
    with pw.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.report_call, ...), for the fixtures' teardown to read."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh browser context; when the test fails, the page as it was is saved to <tmp_path>/failed.png."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    yield pg
    try:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            pg.screenshot(path=str(tmp_path / "failed.png"), full_page=True, timeout=10000)
            print(f"the page when the test failed: {tmp_path / 'failed.png'}")
    finally:
        ctx.close()
