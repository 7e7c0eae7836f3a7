"""The web page in headless Chromium (Debian's, driven by Playwright; no browser download):
it loads with no console error, a typed prompt streams an answer, and at 1280x720 and at
390x844 it shows the districts and at least one tensor pulse."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hive_core.api import ApiConfig
from tests.api.conftest import SLOW

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = os.environ.get("CADENCIA_SCREENSHOTS")  # a folder to keep the screenshots in (docs)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (setup.sh --test)")


async def test_the_page_streams_an_answer_and_draws_the_live_hive(open_server, tiny_gguf,
                                                                   tmp_path) -> None:
    from playwright.async_api import async_playwright

    # 4 servers, 2 replicas per stage: answers are verified, hops pulse along 4 links.
    server = await open_server(tiny_gguf, n=4, replicas=2, profile=SLOW,
                               config=ApiConfig(slots=2))
    problems: list[str] = []
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": 1280, "height": 720})
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            for width, height in ((1280, 720), (390, 844)):
                await page.set_viewport_size({"width": width, "height": height})
                await page.goto(server.url + "/")
                await page.wait_for_function("window.cadencia.connected", timeout=15_000)
                await page.fill("#prompt", "the cat sat on the")
                await page.press("#prompt", "Enter")
                # Tokens arrive, and hops pulse along the links while they do.
                await page.wait_for_function(
                    "document.querySelector('.msg.assistant') && "
                    "document.querySelector('.msg.assistant').textContent.length > 0",
                    timeout=30_000)
                await page.wait_for_function("window.cadencia.pulses.length > 0", timeout=15_000)
                districts = await page.evaluate("window.cadencia.nodes.size")
                assert districts == 5  # this server's asker and the 4 shard servers
                await page.evaluate("window.scrollTo(0, 0)")
                shot = tmp_path / f"web-{width}x{height}.png"
                await page.screenshot(path=str(shot))
                assert shot.stat().st_size > 10_000
                # The answer ends with its route and verdict under it.
                await page.wait_for_selector(".msg.assistant .info", timeout=60_000)
                info = await page.text_content(".msg.assistant .info")
                assert info is not None and "route 1-2 → 2-3" in info and "verified" in info
                assert await page.evaluate("window.cadencia.pulsesDrawn") > 0
                if SHOTS:
                    shutil.copy(shot, Path(SHOTS) / shot.name)
            await context.close()
    finally:
        await server.close()
    assert problems == []
