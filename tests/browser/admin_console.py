#!/usr/bin/env python3
"""The operator console at `/admin/`, in a real Chromium driven by Playwright, against a
running daemon with `[web] admin`, the demo chat and a service secret.

Run by tests/browser.rs (`cargo test --test browser`), which starts the daemon; by hand:

    python3 tests/browser/admin_console.py --base http://127.0.0.1:8765 --secret S [--screenshots DIR]

A wrong secret is refused with a clear message; the right one (typed with the keyboard alone)
signs in and is kept in no storage. While a short load runs (a few hundred messages over the
service API, from alice to bob, whose demo chat is open in a second browser context) the
messages/s chart moves and the p99 delivery latency shows; the users table pages and searches;
disabling bob ends the session in his demo chat tab, which says why; erasing asks first. Then a
phone-sized viewport. Throughout: no console errors, no uncaught exceptions, no CSP violations
in either page (a deliberate one is provoked first and must be seen). Screenshots go to
--screenshots.
"""

import asyncio
import json
import time
import urllib.request

from playwright.async_api import async_playwright, expect

from pages import (
    DESKTOP,
    PASSWORD,
    PHONE,
    PROBLEMS,
    csp_watch_sees_violations,
    every_control_is_named,
    focused_id,
    launch,
    main,
    new_page,
    no_horizontal_scroll,
    verdict,
)

# 10 users a page in the console: alice, bob and these make two pages. (Registration is rate
# limited per address, 20 at once: this stays below.)
EXTRA_USERS = [f"user{n:02}" for n in range(1, 10)]
LOAD_MESSAGES = 300
DISABLED_TEXT = "this account has been disabled by an operator"


def call(base, method, path, body=None, headers=None):
    """One JSON request over plain HTTP (not through the browser); answers (status, JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def register(base, username, display_name):
    status, body = call(
        base,
        "POST",
        "/api/v1/auth/register/",
        {"username": username, "password": PASSWORD, "display_name": display_name},
    )
    assert status == 201, f"register {username}: {status} {body}"
    return body["id"]


def load(base, secret, sender, receiver, count, seconds):
    """`count` messages over the service API, spread over about `seconds`."""
    headers = {"X-Service-Token": secret}
    pause = seconds / count
    for n in range(count):
        status, body = call(
            base,
            "POST",
            "/api/messages/send",
            {"sender_id": sender, "receiver_id": receiver, "text": f"load message {n}"},
            headers,
        )
        assert status == 201, f"load message {n}: {status} {body}"
        time.sleep(pause)


async def sign_in_demo(page, username, display_name):
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#me-name")).to_have_text(display_name)
    await expect(page.locator("#connection-text")).to_have_text("Connected")


async def sign_in_console(page, secret):
    await page.get_by_label("Service secret").fill(secret)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#console")).to_be_visible()


def row(page, username):
    return page.locator("#users-body tr").filter(has=page.locator("td", has_text=username))


async def chart_number(page, chart):
    text = await page.locator(f"#{chart}-value").text_content()
    try:
        return float(text.replace(",", "").split()[0])
    except ValueError:
        return None


async def run(args):
    base, secret, screenshots = args.base, args.secret, args.screenshots
    expect.set_options(timeout=15_000)
    alice_id = register(base, "alice", "Alice")
    bob_id = register(base, "bob", "Bob")
    for name in EXTRA_USERS:
        register(base, name, name.capitalize())

    async with async_playwright() as p:
        browser = await launch(p, args.chromium)

        # --- Bob chats in the demo (a second browser context).
        bob = await new_page(browser, "bob's demo chat", f"{base}/", viewport=DESKTOP)
        await sign_in_demo(bob, "bob", "Bob")

        # --- The console: the CSP watch works; the secret field has focus.
        admin = await new_page(browser, "console", f"{base}/admin/", viewport=DESKTOP)
        await csp_watch_sees_violations(admin)
        assert await focused_id(admin) == "secret", "the secret field has focus first"
        await every_control_is_named(admin, "console sign-in")

        # A wrong secret is refused, and says so (the 401 in the console is expected).
        async with PROBLEMS.expecting(r"^console error: .*status of 401"):
            await admin.get_by_label("Service secret").fill("not-the-secret-at-all")
            await admin.get_by_role("button", name="Sign in").click()
            await expect(admin.locator("#signin-error")).to_have_text(
                "Wrong service secret: the daemon refused it."
            )
        await expect(admin.locator("#console")).to_be_hidden()
        await expect(admin.get_by_label("Service secret")).to_have_attribute("aria-invalid", "true")

        # The right one, with the keyboard alone.
        await admin.get_by_label("Service secret").fill("")
        await admin.get_by_label("Service secret").focus()
        await admin.keyboard.type(secret)
        await admin.keyboard.press("Enter")
        await expect(admin.locator("#console")).to_be_visible()
        await expect(admin.locator("#signin-error")).to_have_text("")
        stored = await admin.evaluate(
            "() => [localStorage.length, sessionStorage.length, document.cookie]"
        )
        assert stored == [0, 0, ""], f"the secret must live in memory only: {stored}"
        await expect(admin.locator("#chart-connections-value")).not_to_have_text("–")
        assert await admin.locator("#chart-webhooks").count() in (0, 1)

        # --- The load: the messages/s chart moves and the p99 latency shows.
        await expect(admin.locator("#chart-rate")).to_have_attribute("data-samples", "2")
        before = await chart_number(admin, "chart-rate")
        assert before in (0.0, None), f"no messages before the load, yet {before}/s"
        loader = asyncio.create_task(
            asyncio.to_thread(load, base, secret, alice_id, bob_id, LOAD_MESSAGES, 6.0)
        )
        highest, latencies = 0.0, set()

        async def watch():
            nonlocal highest
            highest = max(highest, await chart_number(admin, "chart-rate") or 0.0)
            latency = await admin.locator("#chart-latency-value").text_content()
            if latency.endswith("ms"):
                latencies.add(latency)
            await asyncio.sleep(0.25)

        while not loader.done():
            await watch()
        await loader
        for _ in range(12):  # the reading after the load's last messages
            await watch()
        assert highest > 0, "the messages/s chart did not move during the load"
        # Bob's tab had each message delivered: the p99 of those deliveries was shown.
        assert latencies, "no p99 delivery latency was shown during the load"
        print(f"console: messages/s peaked at {highest}; p99 delivery latencies shown: {sorted(latencies)}")
        await expect(bob.locator(".conversation-item").first).to_be_visible()
        await every_control_is_named(admin, "console")
        await admin.screenshot(path=f"{screenshots}/admin-console.png", full_page=True)

        # --- Users: two pages, then a search.
        await expect(admin.locator("#page-status")).to_have_text(
            f"Page 1 of 2 · {2 + len(EXTRA_USERS)} users"
        )
        await expect(admin.get_by_role("button", name="Previous")).to_be_disabled()
        await admin.get_by_role("button", name="Next").click()
        await expect(admin.locator("#page-status")).to_contain_text("Page 2 of 2")
        await expect(admin.locator("#users-body tr")).to_have_count(len(EXTRA_USERS) + 2 - 10)
        await admin.get_by_label("Search users").fill("bob")
        await admin.get_by_label("Search users").press("Enter")
        await expect(admin.locator("#users-body tr")).to_have_count(1)
        await expect(row(admin, "bob")).to_contain_text("Online")
        await expect(row(admin, "bob").locator('td[data-label="Conversations"]')).to_have_text("1")

        # --- Disable bob, after the confirm step; his demo tab's session ends and says why.
        await admin.get_by_role("button", name="Disable bob").click()
        dialog = admin.get_by_role("dialog")
        await expect(dialog).to_contain_text("Disable bob?")
        await admin.keyboard.press("Escape")  # no
        await expect(dialog).to_be_hidden()
        await expect(row(admin, "bob")).not_to_contain_text("Disabled")
        await admin.get_by_role("button", name="Disable bob").click()
        await dialog.get_by_role("button", name="Disable").click()
        await expect(row(admin, "bob")).to_contain_text("Disabled")
        await expect(bob.locator("#auth-error")).to_contain_text(DISABLED_TEXT)
        await expect(bob.locator("#me-name")).to_be_hidden()
        # Signing in again is refused while disabled (the 403 in his console is expected).
        async with PROBLEMS.expecting(r"^console error: .*status of 403"):
            await bob.get_by_label("Username").fill("bob")
            await bob.get_by_label("Password").fill(PASSWORD)
            await bob.get_by_role("button", name="Sign in").click()
            await expect(bob.locator("#auth-error")).to_contain_text("disabled")
        await bob.screenshot(path=f"{screenshots}/demo-session-ended.png")

        # Enabled again, bob signs back in.
        await admin.get_by_role("button", name="Enable bob").click()
        await expect(row(admin, "bob")).not_to_contain_text("Disabled")
        await sign_in_demo(bob, "bob", "Bob")

        # --- Erase a user: cancel first (nothing happens), then confirm.
        await admin.get_by_label("Search users").fill("user09")
        await admin.get_by_role("button", name="Search", exact=True).click()
        await expect(admin.locator("#users-body tr")).to_have_count(1)
        await admin.get_by_role("button", name="Erase user09").click()
        await expect(dialog).to_contain_text("cannot be undone")
        await dialog.get_by_role("button", name="Cancel").click()
        await expect(row(admin, "user09")).to_be_visible()
        await admin.get_by_role("button", name="Erase user09").click()
        await dialog.get_by_role("button", name="Erase for good").click()
        await expect(admin.locator("#users-body")).to_contain_text("No user matches")
        status, body = call(base, "GET", "/api/admin/users/?q=user09", headers={"X-Service-Token": secret})
        assert (status, body["count"]) == (200, 0), f"user09 is still listed: {status} {body}"

        # --- Signing out forgets the secret.
        await admin.get_by_role("button", name="Sign out").click()
        await expect(admin.locator("#signin")).to_be_visible()
        await expect(admin.get_by_label("Service secret")).to_have_value("")

        # --- A phone-sized viewport.
        phone = await new_page(
            browser,
            "console on a phone",
            f"{base}/admin/",
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        await sign_in_console(phone, secret)
        await expect(phone.locator("#chart-rate")).to_have_attribute("data-samples", "2")
        await no_horizontal_scroll(phone, "phone, console")
        await every_control_is_named(phone, "phone, console")
        await phone.screenshot(path=f"{screenshots}/admin-console-phone.png")

        await browser.close()

    return verdict("operator console")


if __name__ == "__main__":
    main(__doc__, run, "--secret")
