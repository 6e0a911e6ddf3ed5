"""The web client in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against a real chatd process with its web port on.

Never ``playwright install``: the system browser is used (``executable_path``).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ChatdProcess, JsonClient, wait_until
from test_e2e_client import Tmux, client
from test_irc_server import IrcClient

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"
# The screenshots in docs/ are remade with CHATD_SCREENSHOTS=1 (else they go to a temp dir,
# so a test run leaves the work tree as it was).
SHOTS = DOCS if os.environ.get("CHATD_SCREENSHOTS") else None

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def web_server() -> Iterator[ChatdProcess]:
    server = ChatdProcess("--rate-limit", "0", irc=True, web=True)
    try:
        yield server
    finally:
        server.stop()


def open_chat(browser: Any, server: ChatdProcess, nick: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    page.goto(f"http://127.0.0.1:{server.web_port}/")
    page.fill("#nick", nick)
    page.press("#nick", "Enter")
    page.get_by_text("you joined #lobby").first.wait_for()
    return page


def say(page: Any, text: str) -> None:
    page.fill("#say", text)
    page.press("#say", "Enter")


def seen(page: Any, text: str, timeout: float = 10_000) -> None:
    page.locator(".log:visible .line").filter(has_text=text).first.wait_for(timeout=timeout)


def test_browsers_terminal_and_irc_chat_in_one_room(
    browser: Any, web_server: ChatdProcess, tmp_path: Path
) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux for the terminal client")
    alice = open_chat(browser, web_server, "alice", viewport={"width": 1280, "height": 760})
    bob = open_chat(browser, web_server, "bob")
    tmux = Tmux()
    irc = IrcClient(web_server.irc_port or 0)
    try:
        carol = client(tmux, tmp_path, web_server.port, "carol")
        irc.register("dave")
        irc.join("#lobby")
        seen(alice, "dave joined #lobby")
        say(alice, "hello from alice's browser")
        say(bob, "hi, bob in another browser")
        carol.type("carol from the terminal")
        carol.press("Enter")
        irc.send_line("PRIVMSG #lobby :dave on IRC")
        irc.send_line("PRIVMSG #lobby :\x01ACTION waves\x01")
        for page in (alice, bob):
            for text in ("hello from alice's browser", "hi, bob in another browser",
                         "carol from the terminal", "dave on IRC", "* dave"):  # fmt: skip
                seen(page, text)
        carol.wait_for("<alice> hello from alice's browser")
        carol.wait_for("<bob> hi, bob in another browser")
        irc.expect(lambda line: "PRIVMSG #lobby :hello from alice's browser" in line)
        irc.expect(lambda line: "PRIVMSG #lobby :hi, bob in another browser" in line)
        # /me, a topic, a mention, a private conversation.
        say(bob, "/me is typing from a phone")
        say(bob, "/topic LAN party tonight")
        say(bob, "alice: are you there?")
        seen(alice, "* bob")
        alice.locator("#topic", has_text="LAN party tonight").wait_for()
        alice.locator(".line.mention", has_text="alice: are you there?").wait_for()
        say(bob, "/msg alice a private word")
        alice.locator("#room-list .badge").first.wait_for()  # unread on the conversation
        members = alice.locator("#member-list li")
        wait_until(lambda: members.count() == 4, timeout=10)
        assert sorted(members.all_inner_texts()) == ["alice", "bob", "carol", "dave"]
        alice.screenshot(path=str((SHOTS or tmp_path) / "web-desktop.png"))
        alice.locator("#room-list button", has_text="@bob").click()
        seen(alice, "a private word")
        assert alice.errors == [] and bob.errors == []
    finally:
        irc.close()
        tmux.close()


def test_markup_from_others_is_shown_as_text(browser: Any, web_server: ChatdProcess) -> None:
    alice = open_chat(browser, web_server, "alice")
    bob = JsonClient(web_server.port)
    bob.hello("bob")
    bob.join("#lobby")
    evil = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"><b>bold</b>'
    bob.say("#lobby", evil)
    seen(alice, "<script>window.pwned=1</script>")
    line = alice.locator(".line", has_text="<img src=x").first
    assert evil in line.inner_text()
    assert alice.locator(".log img, .log script, .log b").count() == 0
    assert alice.evaluate("typeof window.pwned") == "undefined"
    bob.send_json(op="nick", nick="x_img_")
    bob.close()


def test_scroll_back_pages_through_history(browser: Any, web_server: ChatdProcess) -> None:
    bob = JsonClient(web_server.port)
    bob.hello("bob")
    bob.join("#lobby")
    for n in range(160):
        bob.say("#lobby", f"old message {n:03d}")
    bob.expect_frame(type="msg", text="old message 159")
    alice = open_chat(browser, web_server, "alice", viewport={"width": 800, "height": 600})
    seen(alice, "old message 159")
    log = alice.locator(".log:visible")
    for _ in range(20):  # scroll to the top until the first message has come
        if alice.locator(".line", has_text="old message 000").count():
            break
        log.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        alice.wait_for_timeout(150)
    seen(alice, "old message 000")
    texts = [t for t in log.locator(".line .text").all_inner_texts() if t.startswith("old")]
    assert texts == [f"old message {n:03d}" for n in range(160)]  # in order, each once
    bob.close()


def test_reconnect_after_a_server_restart_fills_the_gap(
    browser: Any, make_server: type[ChatdProcess], tmp_path: Path
) -> None:
    db = tmp_path / "history.db"
    # A replay shorter than the gap: only the mid-based gap fill brings all of it back.
    server = make_server("--rate-limit", "0", "--db", str(db), "--history-replay", "2", web=True)
    alice = open_chat(browser, server, "alice")
    bob = JsonClient(server.port)
    bob.hello("bob")
    bob.join("#lobby")
    for n in range(3):
        bob.say("#lobby", f"before {n}")
    seen(alice, "before 2")
    bob.close()
    server.stop(signal.SIGKILL)  # no goodbye: the browser finds out by itself
    alice.locator("#status", has_text="reconnecting").wait_for()
    server.start()
    bob = JsonClient(server.port)
    bob.hello("bob")
    bob.join("#lobby")
    for n in range(6):
        bob.say("#lobby", f"while away {n}")
    bob.expect_frame(type="msg", text="while away 5")
    seen(alice, "reconnected", timeout=30_000)
    seen(alice, "while away 5")
    bob.say("#lobby", "after the reconnect")
    seen(alice, "after the reconnect")
    texts = alice.locator(".log:visible .line .text").all_inner_texts()
    for text in [f"before {n}" for n in range(3)] + [f"while away {n}" for n in range(6)]:
        assert texts.count(text) == 1, (text, texts)  # nothing missed, nothing twice
    assert texts.index("while away 0") < texts.index("while away 5")
    assert texts.index("while away 5") < texts.index("after the reconnect")
    bob.close()
    server.stop()


def test_phone_screen_stays_usable(browser: Any, web_server: ChatdProcess, tmp_path: Path) -> None:
    phone = {"width": 390, "height": 844}
    bob = JsonClient(web_server.port)
    bob.hello("bob")
    bob.join("#lobby")
    alice = open_chat(browser, web_server, "alice", viewport=phone, is_mobile=True, has_touch=True)
    bob.say("#lobby", "a long line " + "that wraps on a narrow screen " * 6)
    bob.say("#lobby", "alice: lunch?")
    seen(alice, "alice: lunch?")
    for selector in ("#say", "#say-form button", "#toggle-rooms", "#toggle-members"):
        box = alice.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= phone["width"]
        assert box["y"] + box["height"] <= phone["height"], selector
    width = alice.evaluate("document.documentElement.scrollWidth")
    assert width <= phone["width"]  # nothing runs off the side
    say(alice, "typed on a phone")
    bob.expect_frame(type="msg", text="typed on a phone")
    alice.screenshot(path=str((SHOTS or tmp_path) / "web-phone.png"))
    alice.click("#toggle-rooms")
    alice.locator("#join-room").fill("#games")
    alice.locator("#join-room").press("Enter")
    alice.locator("#view-name", has_text="#games").wait_for()
    bob.close()


def test_keyboard_alone(browser: Any, web_server: ChatdProcess) -> None:
    alice = open_chat(browser, web_server, "alice")
    alice.keyboard.type("/join #second")
    alice.keyboard.press("Enter")
    alice.locator("#view-name", has_text="#second").wait_for()
    alice.keyboard.press("Alt+ArrowUp")
    alice.locator("#view-name", has_text="#lobby").wait_for()
    alice.keyboard.press("Alt+ArrowDown")
    alice.locator("#view-name", has_text="#second").wait_for()
    alice.keyboard.type("still typing in the box")
    alice.keyboard.press("Enter")
    seen(alice, "still typing in the box")


def test_a_refused_nick_says_why_on_the_login_form(browser: Any, web_server: ChatdProcess) -> None:
    bob = JsonClient(web_server.port)
    bob.hello("bob")
    page = browser.new_context().new_page()
    page.goto(f"http://127.0.0.1:{web_server.web_port}/")
    page.fill("#nick", "bob")
    page.press("#nick", "Enter")
    page.locator("#login-error", has_text="already in use").wait_for()
    page.fill("#nick", "9bad")
    page.press("#nick", "Enter")
    page.locator("#login-error", has_text="nick").wait_for()
    page.fill("#nick", "robert")
    page.press("#nick", "Enter")
    page.get_by_text("you joined #lobby").first.wait_for()
    bob.close()
