"""What the browser tests share (tests/browser/*.py): the browser, pages watched for console
errors, uncaught exceptions and CSP violations, and checks of accessibility and layout."""

import argparse
import asyncio
import re
import sys
from contextlib import asynccontextmanager

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}

# Reports every CSP violation to the test, from every page of the context, also after a reload.
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.indabaCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"}`);
});
"""


class Problems:
    """Console errors, page errors and CSP violations of every page, and the expected ones."""

    def __init__(self):
        self.seen = []
        self.expected = []

    def add(self, who, kind, text):
        for i, (pattern, hits) in enumerate(self.expected):
            if re.search(pattern, f"{kind}: {text}", re.IGNORECASE):
                self.expected[i] = (pattern, hits + 1)
                return
        self.seen.append(f"{who}: {kind}: {text}")

    @asynccontextmanager
    async def expecting(self, pattern):
        """Within the block, problems matching `pattern` (against "kind: text") are expected,
        and at least one must come."""
        entry = (pattern, 0)
        self.expected.append(entry)
        index = len(self.expected) - 1
        yield
        # Console events may trail the action that caused them.
        for _ in range(50):
            if self.expected[index][1] > 0:
                break
            await asyncio.sleep(0.1)
        hits = self.expected[index][1]
        self.expected[index] = ("(?!)", 0)  # matches nothing from now on
        assert hits > 0, f"expected a console problem matching {pattern!r}, saw none"


PROBLEMS = Problems()


async def new_page(browser, who, base, **context_options):
    context = await browser.new_context(**context_options)
    await context.expose_binding(
        "indabaCspViolation", lambda _source, text: PROBLEMS.add(who, "CSP violation", text)
    )
    await context.add_init_script(CSP_WATCH)
    page = await context.new_page()
    page.on(
        "console",
        lambda m: PROBLEMS.add(who, f"console {m.type}", m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: PROBLEMS.add(who, "uncaught exception", str(e)))
    await page.goto(base)
    return page


async def focused_id(page):
    return await page.evaluate("document.activeElement && document.activeElement.id")




async def launch(playwright, chromium):
    """The system's Chromium (never a downloaded one)."""
    return await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


async def csp_watch_sees_violations(page):
    """The watch for CSP violations sees one, and the policy stops inline code: so that the
    "no violations" check cannot pass by being blind."""
    async with (
        PROBLEMS.expecting(r"^CSP violation: require-trusted-types-for"),
        PROBLEMS.expecting(r"^console error: .*TrustedScript"),
    ):
        injected = await page.evaluate(
            """() => {
              const s = document.createElement("script");
              try { s.textContent = "window.injected = true"; } catch (e) {}
              document.body.append(s);
              return window.injected === true;
            }"""
        )
    assert not injected, "inline script ran despite the Content-Security-Policy"


async def every_control_is_named(page, what):
    """Each visible button and field has an accessible name (a label, aria-label(ledby) or text)."""
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll("button, input, textarea, select")]
             .filter((e) => e.offsetParent !== null)
             .filter((e) => !((e.labels && e.labels.length) || e.getAttribute("aria-label")
                              || e.getAttribute("aria-labelledby") || e.textContent.trim()))
             .map((e) => e.outerHTML.slice(0, 100))"""
    )
    assert not unnamed, f"{what}: controls without an accessible name: {unnamed}"


async def no_horizontal_scroll(page, what):
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size["width"]
    assert width <= viewport, f"{what}: the page is {width}px wide in a {viewport}px viewport"


def verdict(what):
    """The script's exit status: 1 after listing the pages' problems, else 0."""
    if PROBLEMS.seen:
        print("problems in the pages:\n  " + "\n  ".join(PROBLEMS.seen), file=sys.stderr)
        return 1
    print(f"{what}: every step passed; no console errors, no CSP violations")
    return 0


def main(doc, run, *required):
    """Parses --base, --chromium, --screenshots and the `required` options (e.g. "--secret"),
    runs `run(args)` and exits with its status."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--base", required=True, help="the daemon's URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", default=".", help="directory for the PNGs")
    for option in required:
        parser.add_argument(option, required=True)
    args = parser.parse_args()
    args.base = args.base.rstrip("/")
    sys.exit(asyncio.run(run(args)))
