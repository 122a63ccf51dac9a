"""The inspector page in headless Chromium: a webhook sent with ``gateway send`` appears
without a reload, its detail shows the body, and Replay delivers it to another sink.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and Selenium. Missing, the test is skipped, except under
``CI=true`` where it fails. ``UPDATE_SCREENSHOTS=1`` writes the screenshot to
``docs/images/inspector.png`` (else it goes to the test's temp dir).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.consumers.harness import ConsumerProcess, free_port, read_jsonl, wait_until
from tests.gateway.support import GatewayProcess
from tests.integration.conftest import TopicFactory

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SECRET = "inspector-browser-test-secret"
SCREENSHOT = ROOT / "docs" / "images" / "inspector.png"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,1000",
)


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{why}: CI must run the browser test (apt-get install chromium chromium-driver)"
        )
    pytest.skip(why)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            _unavailable(f"{path} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def send(config: Path, gateway_url: str, example: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "send", "--config", str(config),
         "--source", "crystallize", "--example", example, "--url", gateway_url],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.match(r"202  id=(\S+)", result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


async def test_event_appears_live_and_replays(
    kafka_bootstrap: str, kafka_topic: TopicFactory, tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    raw = await kafka_topic("raw", partitions=3)
    dlq = await kafka_topic("dlq", partitions=1)
    inspector_port = free_port()
    events_file = tmp_path / "events.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "gateway": {"log_format": "text"},
        "sources": [{"name": "crystallize", "verifier": {"type": "crystallize"},
                     "secrets": [SECRET], "topic": raw}],
        "consumers": {
            "group": f"inspector-{uuid.uuid4().hex[:8]}",
            "topics": [raw],
            "dlq_topic": dlq,
            "sinks": {
                "events_file": {"type": "file", "path": str(events_file), "fsync": "never"},
                "inspector": {"type": "inspector", "port": inspector_port,
                              "replay_config": str(config)},
            },
            # Only the inspector is routed: the file gets an event only by a replay.
            "routes": [{"name": "everything", "sinks": ["inspector"]}],
        },
    }))  # fmt: skip

    gateway = GatewayProcess(config)
    consumer = ConsumerProcess(config, tmp_path / "consumer.log").start()
    try:
        await gateway.wait_healthy()
        await consumer.wait_ready()
        browser.get(f"http://127.0.0.1:{inspector_port}/")
        status = browser.find_element(By.ID, "status")
        await wait_until(lambda: status.text == "live", 30, "the page's stream to connect")
        # Survives only if the page is never reloaded.
        browser.execute_script("window.__notReloaded = 'still here';")
        assert browser.find_elements(By.CSS_SELECTOR, "tr.event-row") == []

        order_id = send(config, gateway.url, "order")

        def row(event_id: str) -> list[Any]:
            found: list[Any] = browser.find_elements(
                By.CSS_SELECTOR, f'tr.event-row[data-id="{event_id}"]'
            )
            return found

        await wait_until(lambda: row(order_id), 60, f"event {order_id} on the page")
        assert browser.execute_script("return window.__notReloaded;") == "still here"
        cells = [td.text for td in row(order_id)[0].find_elements(By.TAG_NAME, "td")]
        assert cells[1:] == ["crystallize", "order", "68e4fe1da9733a66efd88673", order_id]
        # The first event is selected: pretty-printed body and the forwarded header.
        body = browser.find_element(By.ID, "d-body").text
        assert json.loads(body)["order"]["get"]["customer"]["firstName"] == "Bård"
        assert '\n  "order": {' in body
        assert "x-crystallize-signature" in browser.find_element(By.ID, "d-headers").text

        customer_id = send(config, gateway.url, "customer")
        item_id = send(config, gateway.url, "item")
        await wait_until(lambda: row(customer_id) and row(item_id), 60, "two more events")

        # Filtering by type hides the others, without a request.
        type_filter = browser.find_element(By.ID, "f-type")
        type_filter.send_keys("customer")
        await wait_until(lambda: not row(order_id), 10, "the order to be filtered out")
        assert row(customer_id)
        type_filter.clear()
        browser.find_element(By.ID, "f-clear").click()
        await wait_until(lambda: row(order_id), 10, "the order to be back")

        # Replay the order to the file sink (not routed there: ignore routes).
        row(order_id)[0].click()
        Select(browser.find_element(By.ID, "r-sink")).select_by_value("events_file")
        browser.find_element(By.ID, "r-ignore").click()
        browser.find_element(By.ID, "r-go").click()
        output = browser.find_element(By.ID, "r-out")
        await wait_until(lambda: "replayed: 1 record(s)" in output.text, 90, "the replay result")
        lines = read_jsonl(events_file)
        assert [line["id"] for line in lines] == [order_id]
        assert browser.execute_script("return window.__notReloaded;") == "still here"

        browser.execute_script("document.getElementById('detail').scrollTop = 0;")
        shot = tmp_path / "inspector.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)
        # With the page still connected: the consumer shuts down cleanly all the same.
        assert consumer.terminate() == 0, consumer.logs()
    finally:
        gateway.stop()
        consumer.stop_quietly()
