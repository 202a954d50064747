"""The link page as a location's staff opens it: real Chromium (Playwright, Debian's
/usr/bin/chromium) on a phone-sized screen, against a router reachable from the test process
and the WhatsApp Web double its session pods use. Local mode (tests/test_link_page.py) and
the cluster journey call the same functions."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Response, sync_playwright

from session_pod.qr import qr_png
from whatsapp_common.keys import KeyRing
from whatsapp_common.link_tokens import LinkGrant, issue

from .processes import wait_until
from .router import RouterClient
from .session_pods import Double

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
PHONE_SCREEN: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@contextmanager
def phone_browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def link_url(router: RouterClient, location: str, name: str, **fields: Any) -> str:
    """`POST /link_url` as Rails calls it; the URL rebased on `router.url` (the URL the
    router gives is its ROUTER_PUBLIC_URL, which the test process may reach otherwise)."""
    body = {"location_identifier": location, "location_name": name, **fields}
    answer = router.post("/link_url", body)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["expires_at"] > time.time() and urlsplit(body["url"]).path.startswith("/link/")
    return router.url + urlsplit(body["url"]).path


class Visit:
    """One tab on a link page: what it was answered, every request it made, the QR images
    it loaded, what its console said."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.url = url
        self.context = browser.new_context(**PHONE_SCREEN)
        self.page: Page = self.context.new_page()
        self.requests: list[str] = []
        self.qr_responses: list[Response] = []
        self.console: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("response", self._on_response)
        self.page.on("console", lambda message: self.console.append(message.text))
        answer = self.page.goto(url)
        assert answer is not None
        self.answer = answer

    def _on_response(self, response: Response) -> None:
        if urlsplit(response.url).path.endswith("/qr.png") and response.ok:
            self.qr_responses.append(response)

    def wait_state(self, state: str, timeout: float = 30) -> None:
        self.page.wait_for_selector(f'main[data-state="{state}"]', timeout=timeout * 1000)

    def shown_qr_png(self) -> bytes | None:
        """The PNG the page shows now, as the browser received it (None while loading)."""
        src = self.page.evaluate(
            "() => { const i = document.getElementById('qr-image');"
            " return i.complete && i.naturalWidth > 0 ? i.currentSrc : null; }"
        )
        loaded = [r for r in self.qr_responses if r.url == src]
        return loaded[-1].body() if src and loaded else None

    def close(self) -> None:
        self.context.close()


def shown_code(visit: Visit, double: Double) -> str | None:
    """The QR code the page shows: the one pending code whose image is, byte for byte, the
    PNG the browser loaded (the double has the codes of every page it serves)."""
    png = visit.shown_qr_png()
    if png is None:
        return None
    codes = [c for c in double.control("GET", "/qr")["codes"] if qr_png(c) == png]
    assert len(codes) <= 1, "two pending codes with one image"
    return codes[0] if codes else None


def assert_strict_page(visit: Visit, origin: str) -> None:
    """The page's own headers, nothing loaded from elsewhere, no CSP violation."""
    headers = visit.answer.headers
    assert headers["content-security-policy"] == STRICT_CSP
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    elsewhere = [url for url in visit.requests if not url.startswith(origin + "/")]
    assert not elsewhere, f"requests outside the router: {elsewhere}"
    violations = [m for m in visit.console if "Content Security Policy" in m]
    assert not violations, violations


def link_by_qr(
    browser: Browser,
    router: RouterClient,
    location: str,
    double: Double,
    phone: str,
    screenshots: Path | None = None,
) -> str:
    """Opens a new link URL of `location` (waiting for its QR), sees the QR, sees it change
    when the double rotates it, scans the shown code with `phone`, sees "Linked" with the
    phone; the page never reloads. Then the same URL shows "expired". Returns the URL."""
    url = link_url(router, location, "Beauty Shop Palermo")
    visit = Visit(browser, url)
    try:
        assert visit.answer.status == 200
        visit.wait_state("qr", 90)
        assert visit.page.text_content("h1") == "Beauty Shop Palermo"
        first = wait_until(lambda: shown_code(visit, double), 20, "the page showing a QR")
        if screenshots is not None:
            visit.page.screenshot(path=screenshots / "link-page-qr.png", full_page=True)
        visit.page.evaluate("() => { window.sameDocument = true; }")

        double.control("POST", "/qr/rotate")
        second = wait_until(
            lambda: (code := shown_code(visit, double)) not in (None, first) and code,
            20,
            "the page showing the rotated QR",
        )
        assert first not in double.control("GET", "/qr")["codes"]

        double.scan(second, phone)
        visit.wait_state("linked")
        assert visit.page.text_content("#phone") == f"+{phone}"
        assert visit.page.evaluate("() => window.sameDocument === true"), "the page reloaded"
        if screenshots is not None:
            visit.page.screenshot(path=screenshots / "link-page-linked.png", full_page=True)
        assert_strict_page(visit, router.url)
    finally:
        visit.close()

    again = Visit(browser, url)  # linked: the token stops working
    try:
        assert again.answer.status == 410
        again.wait_state("expired", 5)
    finally:
        again.close()
    return url


def link_by_pairing_code(
    browser: Browser,
    router: RouterClient,
    location: str,
    double: Double,
    phone: str,
    screenshots: Path | None = None,
) -> None:
    """Opens a new link URL of `location`, asks for a code by phone number (a bad number
    first: the seed's 400 message shows), the phone types the code in, the page says
    "Linked" with the phone."""
    visit = Visit(browser, link_url(router, location, "Beauty Shop Belgrano"))
    try:
        visit.wait_state("qr", 90)
        visit.page.click("#by-phone summary")
        visit.page.fill("#phone-number", "12")
        visit.page.click("#pairing-form button")
        visit.page.wait_for_selector("#pairing-error:not(:empty)")
        assert "7 to 15 digits" in (visit.page.text_content("#pairing-error") or "")

        visit.page.fill("#phone-number", f"+{phone}")
        visit.page.click("#pairing-form button")
        visit.page.wait_for_selector("#pairing:not([hidden])")
        code = visit.page.text_content("#pairing-code") or ""
        assert re.fullmatch(r"[1-9A-Z]{4}-[1-9A-Z]{4}", code), code
        if screenshots is not None:
            visit.page.screenshot(path=screenshots / "link-page-code.png", full_page=True)
        double.control("POST", "/pair", {"code": code, "phone": phone})
        visit.wait_state("linked")
        assert visit.page.text_content("#phone") == f"+{phone}"
        assert_strict_page(visit, router.url)
    finally:
        visit.close()


def forged(token: str) -> list[str]:
    """The token changed as an attacker could: another location in the signed part, a
    flipped signature character, a truncated signature; and no token at all."""
    head, _, mac = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    other = base64.urlsafe_b64encode(json.dumps({**payload, "l": "other"}).encode())
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    tokens = [f"{other.rstrip(b'=').decode()}.{mac}", f"{head}.{flipped}", f"{head}.{mac[:-4]}"]
    return [*tokens, "not-a-token", f"{head}.{mac}!"]


def refuses_expired_and_forged(
    browser: Browser, router: RouterClient, location: str, masters: KeyRing
) -> None:
    """An expired token, a forged one, and a token that expires while its page is open all
    end on "expired"; none of them gets a QR image. `location` must be showing its QR (state
    `qr_required`); `masters` are the router's link master keys (LINK_MASTER_KEYS)."""
    valid = urlsplit(link_url(router, location, "Beauty Shop")).path.rsplit("/", 1)[1]
    expired = issue(masters, LinkGrant(location, "Beauty Shop", int(time.time()) - 1))
    for token in [expired, *forged(valid)]:
        visit = Visit(browser, f"{router.url}/link/{token}")
        try:
            assert visit.answer.status == 410, token
            visit.wait_state("expired", 5)
            assert visit.page.text_content("h1") == "WhatsApp"  # nothing of the token shown
            assert visit.page.is_visible("text=This link has expired")
        finally:
            visit.close()
        image = router.get(f"/link/{token}/qr.png")
        assert image.status_code == 410 and image.headers["Content-Type"].startswith(
            "application/json"
        )

    soon = issue(masters, LinkGrant(location, "Beauty Shop", int(time.time()) + 8))
    visit = Visit(browser, f"{router.url}/link/{soon}")
    try:
        assert visit.answer.status == 200
        visit.wait_state("qr", 8)
        visit.wait_state("expired", 15)
        assert router.get(f"/link/{soon}/qr.png").status_code == 410
    finally:
        visit.close()
