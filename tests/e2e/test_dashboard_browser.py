"""The dashboard in a real browser (Debian's Chromium via Playwright) on the running stack.

``shopstream up`` as a user starts it; the test opens the printed URL and, as a user would:
watches the order count rise without reloading, opens an order's trace, runs a replay from
the Replay page to the end and sees it match the live model. Every page is saved as a
screenshot under ``artifacts/screenshots/`` (git-ignored), and the page-load and
fragment-refresh times seen are printed (no timing assertion: they are figures, not tests).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from readmodels.queries import NoReadModels, ReadModels
from shopstream.brokers.base import free_port, port_in_use
from shopstream.settings import load_settings

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """``shopstream up`` on its own embedded broker: ``(dashboard url, data dir, port)``."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the browser test must run under CI but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("e2e")
    broker_port, dashboard_port = free_port(), free_port()
    env = {**os.environ, "SHOPSTREAM_DATA_DIR": str(folder / "data"),
           "SHOPSTREAM_DASHBOARD_PORT": str(dashboard_port)}  # fmt: skip
    up = subprocess.Popen(
        [sys.executable, "-m", "shopstream", "up", "--port", str(broker_port), "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder,
    )  # fmt: skip
    url = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 90
    while True:
        assert up.poll() is None, "shopstream up exited"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the dashboard never answered"
        time.sleep(0.5)
    try:
        yield url, folder / "data", broker_port
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=90)
        assert up.returncode == 0, output[-3000:]
        assert f"dashboard: {url}" in output
        assert not port_in_use("127.0.0.1", dashboard_port)


def orders_metric(page: object) -> int:
    locator = page.locator('[data-testid="stMetricValue"]').first  # type: ignore[attr-defined]
    locator.wait_for(timeout=60_000)
    return int(re.sub(r"\D", "", locator.inner_text()) or 0)


def test_a_user_watches_the_shop_traces_an_order_and_replays_the_history(
    stack: tuple[str, Path, int],
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, data, broker_port = stack
    SHOTS.mkdir(parents=True, exist_ok=True)
    settings = load_settings(data_dir=data, broker_address=f"127.0.0.1:{broker_port}")
    rm = ReadModels(settings)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})

        # Overview: the order count rises while the page stays loaded (fragments, no reload).
        began = time.monotonic()
        page.goto(url)
        first = orders_metric(page)
        loaded = time.monotonic() - began
        page.evaluate("window.__not_reloaded = true")
        seen = [(time.monotonic(), first)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len({n for _, n in seen}) < 4:
            page.wait_for_timeout(500)
            value = orders_metric(page)
            if value != seen[-1][1]:
                seen.append((time.monotonic(), value))
        assert page.evaluate("window.__not_reloaded === true"), "the page reloaded"
        counts = [n for _, n in seen]
        assert counts == sorted(counts) and counts[-1] > counts[0], counts
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
        page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "overview.png"))

        for name, title in (("inventory", "Inventory"), ("customers", "Customers"),
                            ("health", "Pipeline health")):  # fmt: skip
            page.goto(f"{url}/{name}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
            page.wait_for_timeout(4000)
            page.screenshot(path=str(SHOTS / f"{name}.png"))

        # Order trace: an order a user saw, its whole chain across the services.
        order_id = _a_reserved_order(rm)
        page.goto(f"{url}/trace")
        box = page.get_by_label("order id")
        box.fill(order_id)
        box.press("Enter")
        page.get_by_text("StockReserved", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text("InvoiceIssued", exact=False).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "trace.png"))

        # Topology: the live map of apps and topics.
        page.goto(f"{url}/topology")
        page.get_by_role("heading", name="Topology").first.wait_for(timeout=60_000)
        page.wait_for_timeout(4000)
        page.screenshot(path=str(SHOTS / "topology.png"))

        # Tour: one model run from the page, on the live stack, with its claims checked.
        page.goto(f"{url}/tour")
        page.get_by_text("CQRS - séparation commande / requête").click()
        page.get_by_role("button", name="Run this scenario").click()
        page.locator(
            '[data-testid="stAlertContentSuccess"]', has_text="the read model shows the order"
        ).wait_for(timeout=120_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "tour.png"))

        # Replay: from the page, to the end, and the verdict.
        page.goto(f"{url}/replay")
        page.get_by_label("name").fill("browser")
        page.get_by_role("button", name="Start replay from offset 0").click()
        began_replay = time.monotonic()
        try:
            page.get_by_text("Same log, same offsets, same model").wait_for(timeout=180_000)
        except PlaywrightTimeout:
            # What the page and the replay said instead, for whoever reads the failure.
            page.screenshot(path=str(SHOTS / "replay-timed-out.png"))
            progress = sorted((data / "run").glob("replay-*.json"))
            log = data / "logs" / "replay-browser.log"
            raise AssertionError(
                "no verdict on the replay page after 180 s; progress files: "
                + "; ".join(f"{p.name}: {p.read_text()[:600]}" for p in progress)
                + f"; replay log: {log.read_text()[-1500:] if log.exists() else '(none)'}"
                + f"; page: {page.inner_text('body')[:1500]!r}"
            ) from None
        replayed = time.monotonic() - began_replay
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / "replay.png"))
        browser.close()
    print(f"\noverview: first metric after {loaded:.2f}s; order count {counts}; "
          f"refresh gaps {[round(g, 2) for g in gaps]} s; replay page verdict after "
          f"{replayed:.1f}s; screenshots in {SHOTS}")  # fmt: skip


def _a_reserved_order(rm: ReadModels, timeout: float = 90) -> str:
    """An order whose invoice is already in the read models (its chain is complete)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = rm.sql(
                f"SELECT order_id FROM {rm.table('invoices')} ORDER BY occurred_at LIMIT 1"
            )
            if found.height:
                return str(found["order_id"][0])
        except NoReadModels:
            pass
        time.sleep(1)
    raise AssertionError("no invoiced order in the read models")
