#!/usr/bin/env python3
"""The HTML API reference at `/api/docs/`, in a real Chromium driven by Playwright.

Run by tests/browser.rs (`cargo test --test browser`), which starts the daemon; by hand:

    python3 tests/browser/api_docs.py --base http://127.0.0.1:8765 [--screenshots DIR]

The vendored Redoc renders the daemon's own OpenAPI document: the title, an operation and its
request body (with the form types), and the search box. Throughout: no console errors, no
uncaught exceptions, no Content-Security-Policy violations, and no request leaves the daemon's
origin (no CDN).
"""

import argparse
import asyncio
import re
import sys

from playwright.async_api import async_playwright, expect

# The same browser flags and CSP watch as the other pages' tests (this directory is on the path).
from pages import CHROMIUM_ARGS, CSP_WATCH  # noqa: E402


async def run(args):
    problems = []
    base = args.base.rstrip("/")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await context.expose_binding(
            "indabaCspViolation", lambda _source, text: problems.append(f"CSP violation: {text}")
        )
        await context.add_init_script(CSP_WATCH)
        page = await context.new_page()
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
        page.on(
            "request",
            lambda r: None
            if r.url.startswith(base) or r.url.startswith(("data:", "blob:"))
            else problems.append(f"request to another origin: {r.url}"),
        )
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )

        await page.goto(f"{base}/api/docs/")
        await expect(page.locator("h1").first).to_contain_text("Indaba HTTP API", timeout=20000)
        # An operation from the generated document, and its body's form types.
        heading = page.locator("h2").filter(has_text=re.compile(r"^Send a message\s*$"))
        await expect(heading).to_be_visible()
        await expect(page.get_by_text("application/x-www-form-urlencoded").first).to_be_attached()
        # The search index runs in a worker built from a blob: URL (allowed by the CSP).
        search = page.get_by_placeholder("Search...")
        await search.fill("broadcast")
        # The worker indexes the whole document first: give a busy machine time.
        result = page.locator(
            "[data-role='search:results'] [data-item-id='tag/service/operation/serviceBroadcast']"
        )
        await expect(result).to_be_visible(timeout=30000)
        await page.screenshot(path=f"{args.screenshots}/api-docs.png")
        # Console events may trail the rendering.
        await asyncio.sleep(0.5)
        await browser.close()
    if problems:
        print("problems:\n  " + "\n  ".join(problems))
        return 1
    print("api docs: rendered from the embedded viewer, no console errors, no CSP violations")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the daemon's URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", default=".", help="directory for the PNGs")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
