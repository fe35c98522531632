"""The admin dashboard in a real headless Chromium: it shows the mesh and follows an ejection.

Needs Debian's ``chromium`` and the ``playwright`` Python package (no browser download: the
system Chromium is launched by path). Skipped, with the reason, when either is missing.
"""

import asyncio
import contextlib
import re
import shutil
import time
from pathlib import Path

import pytest

import meshlib
from meshlib.admin import start_admin
from meshlib.upstream import Upstream, UpstreamBehaviour

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed"),
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]


async def _traffic(client: meshlib.AsyncMeshClient, stop: asyncio.Event) -> int:
    """Steady calls (about 50/s) until told to stop; bounded by count and time."""
    sent = 0
    deadline = time.monotonic() + 60
    while not stop.is_set() and sent < 3000 and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            await client.get("http://users/")
        sent += 1
        await asyncio.sleep(0.02)
    return sent


async def test_dashboard_shows_services_and_follows_an_ejection(
    upstreams: list[Upstream], tmp_path: Path
) -> None:
    assert async_playwright is not None
    assert CHROMIUM is not None
    addrs = [f"127.0.0.1:{s.port}" for s in upstreams]
    failing = addrs[1]
    config = meshlib.MeshConfig(
        # Round robin keeps offering the failing endpoint traffic, so accrual ejects it quickly;
        # a long backoff keeps it ejected for the rest of the test.
        balancer="round-robin",
        accrual=meshlib.AccrualPolicy(backoff_min=60, backoff_max=120),
        timeout=5.0,
    )
    discovery = meshlib.StaticDiscovery({"users": addrs})
    stop = asyncio.Event()
    async with meshlib.AsyncMeshClient(discovery=discovery, config=config, timeout=5) as client:
        await client.get("http://users/")
        traffic = asyncio.create_task(_traffic(client, stop))
        try:
            async with await start_admin(client, addr="127.0.0.1:0") as admin:
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch_persistent_context(
                        str(tmp_path / "profile"),
                        executable_path=CHROMIUM,
                        headless=True,
                        args=ARGS,
                        viewport={"width": 1360, "height": 860},
                    )
                    try:
                        page = browser.pages[0] if browser.pages else await browser.new_page()
                        await page.goto(f"{admin.url}/", wait_until="load")
                        card = page.locator('section[data-service="users"]')
                        await expect(card).to_be_visible(timeout=5000)
                        await expect(card.locator("h2 .name")).to_have_text("users")
                        meta = card.locator(".meta:not(.traffic)")
                        await expect(meta).to_contain_text("deadline 5.00 s")
                        for addr in addrs:
                            row = card.locator(f'tr[data-endpoint="{addr}"]')
                            await expect(row.locator("td.state")).to_have_text("alive")
                        # A rate needs two polls; the plot needs a few points.
                        await expect(card.locator(".stat .v").first).not_to_have_text(
                            "—", timeout=5000
                        )

                        upstreams[1].set_behaviour(
                            UpstreamBehaviour(name="b", fail_fraction=1.0, fail_status=500)
                        )
                        for _ in range(100):  # bounded: ~10 s
                            svc = client.mesh_state()["services"]["users"]
                            states = {e["address"]: e["state"] for e in svc["endpoints"]}
                            if states[failing] == "dead":
                                break
                            await asyncio.sleep(0.1)
                        assert states[failing] == "dead", states
                        ejected_at = time.monotonic()

                        row = card.locator(f'tr[data-endpoint="{failing}"]')
                        await expect(row.locator("td.state")).to_have_text("dead", timeout=5000)
                        assert time.monotonic() - ejected_at < 5
                        await expect(row.locator("td.probe")).to_have_text(
                            re.compile(r"in \d+\.\d s")
                        )
                        await expect(page.locator("#summary")).to_contain_text("1 not alive")
                        for addr in (addrs[0], addrs[2]):
                            ok = card.locator(f'tr[data-endpoint="{addr}"] td.state')
                            await expect(ok).to_have_text("alive")
                        await expect(page.locator("#status")).to_have_class("ok")

                        await asyncio.sleep(2)  # a little more history in the plot
                        shot = tmp_path / "dashboard.png"
                        await page.screenshot(path=str(shot), full_page=True)
                    finally:
                        await browser.close()
        finally:
            stop.set()
            sent = await traffic
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000, len(data)
    assert sent > 10
    print(f"dashboard screenshot: {shot}")


async def test_dashboard_shows_the_routes_and_split_in_force(
    upstreams: list[Upstream], tmp_path: Path
) -> None:
    assert async_playwright is not None
    assert CHROMIUM is not None
    endpoints = [
        {"address": f"127.0.0.1:{s.port}", "meta": {"version": v}}
        for s, v in zip(upstreams, ("v1", "v1", "v2"), strict=True)
    ]
    entries = [
        {
            "Kind": "service-resolver",
            "Name": "users",
            "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": "Service.Meta.version == v1"},
                "v2": {"Filter": "Service.Meta.version == v2"},
            },
        },
        {
            "Kind": "service-splitter",
            "Name": "users",
            "Splits": [
                {"Weight": 90, "ServiceSubset": "v1"},
                {"Weight": 10, "ServiceSubset": "v2"},
            ],
        },
    ]
    discovery = meshlib.StaticDiscovery({"users": endpoints}, config_entries=entries)
    async with meshlib.AsyncMeshClient(discovery=discovery, timeout=5) as client:
        for _ in range(5):
            await client.get("http://users/")
        async with await start_admin(client, addr="127.0.0.1:0") as admin:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch_persistent_context(
                    str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS
                )
                try:
                    page = browser.pages[0] if browser.pages else await browser.new_page()
                    await page.goto(f"{admin.url}/", wait_until="load")
                    card = page.locator('section[data-service="users"]')
                    await expect(card.locator(".traffic")).to_have_text(
                        "traffic: → 90% v1.users.default.default.dc1, "
                        "10% v2.users.default.default.dc1",
                        timeout=5000,
                    )
                finally:
                    await browser.close()
