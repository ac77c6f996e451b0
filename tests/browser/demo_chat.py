#!/usr/bin/env python3
"""The demo chat at `/`, in a real Chromium driven by Playwright, against a running daemon.

Run by tests/browser.rs (`cargo test --test browser`), which starts the daemon; by hand:

    python3 tests/browser/demo_chat.py --base http://127.0.0.1:8765 [--screenshots DIR]

Two users sign up in two browser contexts, find each other by username and chat: typing
indicators, read receipts, unread counts on the list, presence going offline after the grace.
One user leaves and comes back and catches up on what was sent meanwhile (queue replay); a
second tab of that user, whose connection is cut by a TCP proxy in this script while the first
tab takes the message off the queue, recovers it with `sync` after reconnecting. Then a phone
sized viewport. Throughout: no console errors, no uncaught exceptions, no CSP violations — and,
so that this check cannot pass by being blind, a deliberate violation is provoked first and
must be seen. Screenshots of the page go to --screenshots.
"""

import asyncio
import re

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


async def sign_up(page, username, display_name):
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Display name").fill(display_name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#me-name")).to_have_text(display_name)
    await expect(page.locator("#connection-text")).to_have_text("Connected")


async def sign_in(page, username, display_name):
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#me-name")).to_have_text(display_name)
    await expect(page.locator("#connection-text")).to_have_text("Connected")


async def send(page, text):
    box = page.get_by_role("textbox", name="Message")
    await box.fill(text)
    await box.press("Enter")
    await expect(page.locator(".message.mine").last).to_contain_text(text)


def item(page, name):
    """A conversation in the list, by the other person's name."""
    return page.locator(".conversation-item").filter(has=page.locator(".conversation-name", has_text=name))


class CuttableProxy:
    """A TCP proxy to the daemon whose connections can be cut (a dropped network). After a
    cut it holds new connections — plain HTTP and WebSocket upgrades separately, so a test can
    choose which comes back first — and the browser's retries wait instead of failing."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.http_flowing = asyncio.Event()
        self.ws_flowing = asyncio.Event()
        self.http_flowing.set()
        self.ws_flowing.set()
        self.cut_marker = None
        self.pairs = set()
        self.port = None
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader, client_writer):
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            client_writer.close()
            return
        upgrade = b"upgrade: websocket" in head.lower()
        await (self.ws_flowing if upgrade else self.http_flowing).wait()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        upstream_writer.write(head)
        pair = (client_writer, upstream_writer)
        self.pairs.add(pair)

        async def pipe(reader, writer, downstream):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
                    if downstream and self.cut_marker and self.cut_marker in data:
                        self.cut()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(
            pipe(client_reader, upstream_writer, False),
            pipe(upstream_reader, client_writer, True),
        )
        self.pairs.discard(pair)

    def cut_after(self, marker):
        """Cuts everything right after the daemon sends `marker` to the browser."""
        self.cut_marker = marker

    def cut(self):
        """Drops every connection at once (no close frames) and holds new ones."""
        self.cut_marker = None
        self.http_flowing.clear()
        self.ws_flowing.clear()
        for a, b in list(self.pairs):
            a.transport.abort()
            b.transport.abort()

    def resume_http(self):
        self.http_flowing.set()

    def resume_websockets(self):
        self.ws_flowing.set()

    def close(self):
        self.server.close()


async def run(args):
    base, screenshots = args.base, args.screenshots
    expect.set_options(timeout=15_000)
    host, port = re.match(r"http://([^:/]+):(\d+)", base).groups()
    async with async_playwright() as p:
        browser = await launch(p, args.chromium)

        # --- The watch for CSP violations sees one, and the policy stops inline code.
        alice = await new_page(browser, "alice", base, viewport=DESKTOP)
        await csp_watch_sees_violations(alice)
        await alice.screenshot(path=f"{screenshots}/demo-sign-in.png")
        await every_control_is_named(alice, "sign-in form")

        # --- Sign up: alice with the mouse, bob with the keyboard alone (focus order).
        await sign_up(alice, "alice", "Alice")
        bob = await new_page(browser, "bob", base, viewport=DESKTOP)
        assert await focused_id(bob) == "auth-username", "the username field has focus first"
        for expected in ["auth-password", "auth-submit", "auth-switch"]:
            await bob.keyboard.press("Tab")
            assert await focused_id(bob) == expected, f"Tab order: expected {expected}"
        await bob.keyboard.press("Enter")  # "Create an account"
        assert await focused_id(bob) == "auth-username"
        await bob.keyboard.type("bob")
        await bob.keyboard.press("Tab")
        assert await focused_id(bob) == "auth-display-name"
        await bob.keyboard.type("Bob")
        await bob.keyboard.press("Tab")
        await bob.keyboard.type(PASSWORD)
        await bob.keyboard.press("Enter")
        await expect(bob.locator("#me-name")).to_have_text("Bob")
        await expect(bob.locator("#connection-text")).to_have_text("Connected")

        # --- Find each other by username; an unknown name is said so (its 404 is expected).
        start = alice.get_by_label("Start a conversation")
        async with PROBLEMS.expecting(r"^console error: .*status of 404"):
            await start.fill("nobody-by-this-name")
            await start.press("Enter")
            await expect(alice.get_by_role("alert").filter(has_text="No user is called")).to_be_visible()
        await start.fill("bob")
        await alice.get_by_role("button", name="Start").click()
        await expect(alice.locator("#peer-name")).to_have_text("Bob")
        await expect(alice.locator("#peer-presence")).to_have_text("Online")

        # --- Typing shows in bob's list before any message; unread counts grow.
        await alice.get_by_role("textbox", name="Message").type("Hel")
        await expect(item(bob, "Alice").locator(".conversation-preview")).to_have_text("typing…")
        await send(alice, "Hello Bob! Have you tried the new server?")
        await expect(item(bob, "Alice").locator(".badge")).to_have_text("1")
        await send(alice, "It keeps everything in one file.")
        await expect(item(bob, "Alice").locator(".badge")).to_have_text("2")
        await expect(item(bob, "Alice").locator(".conversation-preview")).to_have_text(
            "It keeps everything in one file."
        )
        await expect(bob).to_have_title("(2) Indaba demo chat")
        await expect(alice.locator(".message.mine .receipt").last).to_have_text("✓ Sent")

        # --- Bob opens it with the keyboard: Tab from the username box to the list, Enter.
        await bob.get_by_label("Start a conversation").focus()
        await bob.keyboard.press("Tab")  # Start
        await bob.keyboard.press("Tab")  # the conversation
        assert await bob.evaluate("document.activeElement.classList.contains('conversation-item')")
        await bob.keyboard.press("Enter")
        assert await focused_id(bob) == "composer-input", "opening a conversation focuses the box"
        await expect(bob.locator(".message")).to_have_count(2)
        await expect(item(bob, "Alice").locator(".badge")).to_have_count(0)
        await expect(bob).to_have_title("Indaba demo chat")
        # Read receipts reach alice: both her messages are read.
        await expect(alice.locator(".message.mine .receipt")).to_have_text(["✓✓ Read", "✓✓ Read"])

        # --- Bob types (alice sees it), sends (the indicator goes), types again.
        await bob.keyboard.type("Yes! One binary")
        await expect(alice.locator("#typing")).to_have_text("Bob is typing…")
        await bob.keyboard.type(", and the messages survive a kill -9.")
        await bob.keyboard.press("Enter")
        await expect(alice.locator(".message").last).to_contain_text("survive a kill -9")
        await expect(alice.locator("#typing")).to_have_text("")
        await expect(bob.locator(".message.mine .receipt").last).to_have_text("✓✓ Read")
        await send(alice, "Nice. Let's try it on a phone too.")
        await bob.get_by_role("textbox", name="Message").type("Sure, one moment")
        await expect(alice.locator("#typing")).to_have_text("Bob is typing…")
        await alice.screenshot(path=f"{screenshots}/demo-chat.png")
        await every_control_is_named(alice, "chat")
        await bob.get_by_role("textbox", name="Message").fill("")

        # --- Bob leaves; what alice sends meanwhile is there when he comes back (queue replay).
        await bob.goto("about:blank")
        await send(alice, "Sent while you were away (1)")
        await send(alice, "Sent while you were away (2)")
        await bob.goto(base)  # the same tab: its session is still in sessionStorage
        await expect(bob.locator("#connection-text")).to_have_text("Connected")
        await expect(item(bob, "Alice").locator(".badge")).to_have_text("2")
        await expect(item(bob, "Alice").locator(".conversation-preview")).to_have_text(
            "Sent while you were away (2)"
        )
        await item(bob, "Alice").click()
        await expect(bob.locator(".message").filter(has_text="while you were away")).to_have_count(2)
        await expect(alice.locator(".message.mine .receipt").last).to_have_text("✓✓ Read")
        # And a plain reload keeps the session and shows the same conversation.
        await bob.reload()
        await expect(bob.locator("#me-name")).to_have_text("Bob")
        await expect(item(bob, "Alice")).to_be_visible()

        # --- A second tab of bob's, behind a proxy that drops its connection. While it is
        # cut, bob's first tab takes alice's message off the queue; the second tab only gets it
        # from `sync` after reconnecting (its history was loaded before the cut). The cut
        # comes right after the `unread_count` that bob's first tab causes by reading: the
        # second tab then refreshes its list over REST, and that answer (which shows the
        # message as the preview) is let through before the socket, so `sync` must still ask
        # for what the open conversation has not received.
        proxy = CuttableProxy(host, int(port))
        await proxy.start()
        bob2 = await new_page(browser, "bob's second tab", f"http://127.0.0.1:{proxy.port}/", viewport=DESKTOP)
        await sign_in(bob2, "bob", "Bob")
        await item(bob2, "Alice").click()
        await expect(bob2.locator(".message").filter(has_text="while you were away")).to_have_count(2)
        await send(alice, "One more before the cut.")
        await expect(bob2.locator(".message").last).to_contain_text("One more before the cut.")
        # bob's first tab has it in its list too. No unread badge is asserted here: bob's second
        # tab has the conversation open and reads the message, and the `unread_count` that
        # causes makes the first tab refresh its counts to 0 within moments (a badge of 1 shows
        # only in between, which a slow machine's test may never see).
        await expect(item(bob, "Alice").locator(".conversation-preview")).to_have_text(
            "One more before the cut."
        )
        proxy.cut_after(b'"unread_count"')
        await item(bob, "Alice").click()
        await expect(bob2.locator("#connection-text")).not_to_have_text("Connected")
        await expect(bob2.locator("#banner")).to_contain_text("Connection lost")
        await send(alice, "Did both your tabs get this?")
        await expect(bob.locator(".message").last).to_contain_text("Did both your tabs get this?")
        proxy.resume_http()
        await expect(item(bob2, "Alice").locator(".conversation-preview")).to_have_text(
            "Did both your tabs get this?"
        )
        await expect(bob2.locator("#connection-text")).not_to_have_text("Connected")
        proxy.resume_websockets()
        await expect(bob2.locator("#connection-text")).to_have_text("Connected")
        await expect(bob2.locator("#banner")).to_be_hidden()
        await expect(bob2.locator(".message").last).to_contain_text("Did both your tabs get this?")
        await expect(bob2.locator(".message").filter(has_text="Did both your tabs")).to_have_count(1)

        # --- A phone-sized viewport: the list, then the conversation with a way back.
        phone = await new_page(
            browser,
            "alice's phone",
            base,
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        await sign_in(phone, "alice", "Alice")
        await no_horizontal_scroll(phone, "phone, conversation list")
        await expect(phone.locator("#conversation")).to_be_hidden()
        await item(phone, "Bob").tap()
        await expect(phone.locator("#sidebar")).to_be_hidden()
        await expect(phone.get_by_role("button", name="Conversations")).to_be_visible()
        await send(phone, "Typing this on a phone.")
        await expect(bob.locator(".message").last).to_contain_text("Typing this on a phone.")
        await send(bob, "Got it here on my desktop.")
        await expect(phone.locator(".message").last).to_contain_text("Got it here on my desktop.")
        await no_horizontal_scroll(phone, "phone, conversation")
        await every_control_is_named(phone, "phone, conversation")
        await phone.screenshot(path=f"{screenshots}/demo-chat-phone.png")
        await phone.get_by_role("button", name="Conversations").tap()
        await expect(phone.locator("#sidebar")).to_be_visible()

        # --- Presence: bob closes both tabs; alice sees him go offline after the grace.
        await expect(alice.locator("#peer-presence")).to_have_text("Online")
        await bob.context.close()
        await bob2.context.close()
        await expect(alice.locator("#peer-presence")).to_have_text(re.compile(r"^Last seen "))
        await expect(item(alice, "Bob").locator(".dot")).not_to_have_class(re.compile(r"online"))

        proxy.close()
        await browser.close()

    return verdict("demo chat")


if __name__ == "__main__":
    main(__doc__, run)
