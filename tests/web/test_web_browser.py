"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): pages
load, a job enqueued from Python appears live, a running job is aborted from the UI,
the workers page follows workers and their jobs, read-only mode refuses actions.
Screenshots are kept in the test's tmp folder (and in docs/images when
PODQ_WEB_SCREENSHOTS=docs)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from web_helpers import TOKEN, wait_for

from podq import Status

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: scripts/test installs it (apt-get)"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        await b.close()


async def new_page(browser: Browser) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(30_000)  # a loaded machine: Chromium is slow
    return page


async def keep(page: Page, tmp_path: Path, name: str) -> Path:
    """A screenshot kept as a test artifact (and for the docs when asked)."""
    path = tmp_path / name
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("PODQ_WEB_SCREENSHOTS") == "docs":
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / name)
    return path


async def test_live_jobs_and_abort_from_the_ui(queue, dashboard, workers, browser, tmp_path):
    started = asyncio.Event()

    async def slow(ctx):
        started.set()
        await asyncio.sleep(120)

    async def add(ctx, *, a: int, b: int) -> int:
        if a < 0:
            raise ValueError("a must not be negative")
        return a + b

    await workers.start(queue, [("slow", slow), ("add", add)], concurrency=4)
    d = await dashboard(token=TOKEN)
    page = await new_page(browser)
    await page.goto(d.url + "/queues")
    await expect(page.locator("h1")).to_have_text("Queues")
    await expect(page.locator("#live")).to_have_class("live on")
    for i in range(12):  # some history for the charts, drawn as it happens
        await queue.enqueue("add", key=f"add-{i}", kwargs={"a": -1 if i % 4 == 0 else i,
                                                           "b": 1})
    await expect(page.locator('[data-live="web:stats_complete"]')).to_have_text("9")
    await expect(page.locator("svg.throughput rect.bar").first).to_be_visible()
    await expect(page.locator("svg.failures circle.dot").first).to_be_attached()

    await page.goto(d.url + "/queues/web/jobs?status=active")
    await expect(page.locator("#live")).to_have_class("live on")
    await page.evaluate("window.notReloaded = true")
    await queue.enqueue("slow", key="long-run", timeout=300)
    row = page.locator('tr[data-key="long-run"]')
    await expect(row).to_be_visible()  # arrived by the event stream
    await expect(row.locator(".badge")).to_have_text("active")
    assert await page.evaluate("window.notReloaded") is True
    await asyncio.wait_for(started.wait(), 30)

    await page.goto(d.url + "/login")
    await page.fill('input[name="token"]', TOKEN)
    await page.click('form.login button[type="submit"]')
    await expect(page.locator("#mode")).to_have_text("write access")
    await keep(page, tmp_path, "dashboard.png")

    await page.goto(d.url + "/queues/web/job?key=" + quote("long-run"))
    await page.click("button.action.abort")
    await expect(page.locator("h1")).to_contain_text("Abort job")  # asks first
    assert (await queue.job("long-run")).status == Status.ACTIVE
    await page.click("#confirm")
    await expect(page.locator("#job-detail .badge").first).to_have_text("aborted")
    assert (await queue.job("long-run")).status == Status.ABORTED
    await expect(page.locator("#error")).to_contain_text("aborted from podq web")
    await keep(page, tmp_path, "job.png")

    await page.goto(d.url + "/queues/web/jobs")  # every status: finished ones too
    await expect(page.locator('tr[data-key="long-run"] .badge')).to_have_text("aborted")
    await expect(page.locator("tbody .badge.failed")).to_have_count(3)
    await keep(page, tmp_path, "jobs.png")


async def test_read_only_mode_offers_and_accepts_no_action(queue, dashboard, browser):
    await queue.enqueue("slow", key="k1")
    d = await dashboard()
    page = await new_page(browser)
    await page.goto(d.url + "/queues/web/job?key=k1")
    await expect(page.locator("#mode")).to_have_text("read-only")
    await expect(page.locator("#job-detail .badge").first).to_have_text("queued")
    assert await page.locator("button.action").count() == 0
    status = await page.evaluate("""async () => {
        const form = new FormData();
        form.append("key", "k1"); form.append("confirm", "yes");
        const r = await fetch("/queues/web/job/abort", {method: "POST", body: form});
        return r.status;
    }""")
    assert status == 403
    await page.goto(d.url + "/login")
    await expect(page.locator("main")).to_contain_text("read-only for everyone")
    await wait_for(lambda: True)
    assert (await queue.job("k1")).status == Status.QUEUED


async def test_the_policy_blocks_injected_script(queue, dashboard, browser):
    """A job key or kwargs holding markup is shown as text, and the CSP would refuse an
    inline script anyway."""
    await queue.enqueue("f", key="<script>window.pwned=1</script>", kwargs={"x": "<b>y</b>"})
    d = await dashboard()
    page = await new_page(browser)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(d.url + "/queues/web/jobs")
    await expect(page.locator("tbody tr a").first).to_have_text(
        "<script>window.pwned=1</script>")
    assert await page.evaluate("window.pwned") is None
    await page.evaluate("""() => { const s = document.createElement('script');
        s.textContent = 'window.pwned = 2'; document.body.appendChild(s); }""")
    assert await page.evaluate("window.pwned") is None  # inline script refused
    assert any("Content Security Policy" in e for e in errors)


async def test_the_workers_page_follows_workers_and_their_jobs_live(
        queue, dashboard, workers, browser):
    started = asyncio.Event()

    async def slow(ctx):
        started.set()
        await asyncio.sleep(120)

    d = await dashboard()
    page = await new_page(browser)
    await page.goto(d.url + "/workers")
    await expect(page.locator("#live")).to_have_class("live on")
    await expect(page.locator("#workers-table .empty")).to_have_text("No live worker.")
    await page.evaluate("window.notReloaded = true")
    worker = await workers.start(queue, [("slow", slow)])
    row = page.locator("#workers-table tbody tr", has_text=worker.id)
    await expect(row).to_be_visible()  # at the next sample: no reload
    ages = row.locator("td").nth(5)
    first = await ages.text_content()
    await expect(ages).not_to_have_text(first or "")  # the liveness age moves on
    await queue.enqueue("slow", key="running-here", timeout=300)
    await asyncio.wait_for(started.wait(), 30)
    await expect(row.locator('a[href="/queues/web/job?key=running-here"]')).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True


async def test_every_request_of_every_page_goes_to_the_dashboard_itself(
        queue, dashboard, browser):
    """No CDN, no font or script from elsewhere: it works with no internet."""
    job = await queue.enqueue("add", key="k1", kwargs={"a": 1})
    await queue.finish(job, Status.FAILED, error="Traceback: boom")
    d = await dashboard(token=TOKEN)
    page = await new_page(browser)
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(d.url + "/")
            else elsewhere.append(r.url))
    # what the policy blocked is never requested: it shows as a console error instead
    page.on("console", lambda m: elsewhere.append(m.text) if m.type == "error" else None)
    for path, ready in (("/queues", "svg.chart"), ("/queues/web/jobs", "table.jobs"),
                        ("/queues/web/job?key=k1", "#error"), ("/workers", "table.workers"),
                        ("/login", "form.login")):
        await page.goto(d.url + path)
        await expect(page.locator(ready).first).to_be_visible()
        await expect(page.locator("#live")).to_have_class("live on")  # its script ran
    assert elsewhere == []
