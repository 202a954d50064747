"""The link page in local mode: real Chromium opens the URL `POST /link_url` gives, sees the
live QR change as WhatsApp (the double) rotates it, links by QR and by pairing code, and sees
"expired" for an expired or forged token. The cluster journey runs the same functions
(tests/support/link_page.py)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser

from tests.support import link_page
from tests.support.local_mode import LocalMode
from tests.support.processes import REPO, wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, new_phone
from whatsapp_common.keys import parse_ring

pytestmark = pytest.mark.slow
QR_LOCATION, PAIRING_LOCATION, EXPIRY_LOCATION = "51", "52", "53"


@pytest.fixture(scope="module")
def rails() -> Iterator[RailsReceiver]:
    rails = RailsReceiver()
    rails.start()
    yield rails
    rails.stop()


@pytest.fixture(scope="module")
def local(
    double: Double, rails: RailsReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalMode]:
    root = tmp_path_factory.mktemp("link-page")
    env = {
        **double.session_env(),
        **rails.env("link-secret"),
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
    }
    local = LocalMode(root / "data", root / "terminal.log", env, QR_LOCATION)
    try:
        for location in (QR_LOCATION, PAIRING_LOCATION, EXPIRY_LOCATION):
            login = local.post("/login", {"location_identifier": location, "user_id": 1})
            assert login.ok, login.text
        yield local
    finally:
        local.program.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with link_page.phone_browser() as browser:
        yield browser


def keep_screenshot(folder: Path, name: str) -> None:
    """A PNG the test took; README's copy in docs/ with UPDATE_SCREENSHOTS=1."""
    assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(folder / name, REPO / "docs" / name)


def data_dir(local: LocalMode) -> Path:
    return local.program.log_path.parent / "data"


def test_the_page_follows_the_qr_and_says_linked(
    local: LocalMode, double: Double, browser: Browser, tmp_path: Path
) -> None:
    phone = new_phone()
    url = link_page.link_by_qr(browser, local, QR_LOCATION, double, phone, tmp_path)
    assert local.wait_state(QR_LOCATION, "ready")["phone"] == phone

    # What the staff saw: a phone screen with the QR, then "Linked" (README's pictures in
    # docs/ are these, taken with UPDATE_SCREENSHOTS=1).
    for name in ("link-page-qr.png", "link-page-linked.png"):
        keep_screenshot(tmp_path, name)

    # Neither the token nor any QR code is in a log line of the router or the pod.
    token = url.rsplit("/", 1)[1]
    logs = local.output() + "".join(p.read_text() for p in data_dir(local).rglob("pod.log"))
    assert token not in logs
    assert '"route": "/link/{token}"' in logs or '"route":"/link/{token}"' in logs
    assert "2@" not in logs, "a QR code was logged"


def test_a_pairing_code_from_the_page_links_the_phone(
    local: LocalMode, double: Double, browser: Browser, tmp_path: Path
) -> None:
    phone = new_phone()
    link_page.link_by_pairing_code(browser, local, PAIRING_LOCATION, double, phone, tmp_path)
    assert local.wait_state(PAIRING_LOCATION, "ready")["phone"] == phone
    keep_screenshot(tmp_path, "link-page-code.png")


def test_expired_and_forged_tokens_show_expired(local: LocalMode, browser: Browser) -> None:
    local.wait_state(EXPIRY_LOCATION, "qr_required", 90)
    masters = parse_ring((data_dir(local) / "link-keys").read_text())
    link_page.refuses_expired_and_forged(browser, local, EXPIRY_LOCATION, masters)
    metrics = local.get("/metrics").text
    for reason in ("expired", "forged", "malformed", "linked"):
        assert f'wa_router_link_refusals_total{{reason="{reason}"}}' in metrics, reason


def test_the_qr_webhook_carries_a_link_that_opens_the_page(
    local: LocalMode, rails: RailsReceiver, browser: Browser
) -> None:
    """Rails can text or e-mail the link: the pod signs it with its own location's key."""
    local.wait_state(EXPIRY_LOCATION, "qr_required", 90)
    qr = wait_until(
        lambda: next(
            (e["data"] for e in rails.events("qr") if e["location_identifier"] == EXPIRY_LOCATION),
            None,
        ),
        30,
        "the qr webhook",
    )
    url = qr["link_url"]
    assert url.startswith(f"{local.url}/link/") and qr["link_expires_at"] > time.time() + 600
    visit = link_page.Visit(browser, url)
    try:
        assert visit.answer.status == 200
        visit.wait_state("qr")
        assert visit.page.text_content("h1") == f"Location {EXPIRY_LOCATION}"
    finally:
        visit.close()
    pod_logs = "".join(p.read_text() for p in data_dir(local).rglob("pod.log"))
    assert url.rsplit("/", 1)[1] not in pod_logs + local.output()


def test_an_open_page_follows_its_pod_through_a_crash(
    local: LocalMode, double: Double, browser: Browser
) -> None:
    """The pod is killed -9 while the page shows its QR: the page waits, and shows the new
    pod's QR when local mode has started it again, with no reload."""
    local.wait_state(EXPIRY_LOCATION, "qr_required", 90)
    visit = link_page.Visit(browser, link_page.link_url(local, EXPIRY_LOCATION, "Beauty Shop"))
    try:
        visit.wait_state("qr")
        before = wait_until(lambda: link_page.shown_code(visit, double), 20, "a QR")
        visit.page.evaluate("() => { window.sameDocument = true; }")
        (pod,) = [p for p in local.session_pods() if p.environ()["LOCATION_ID"] == EXPIRY_LOCATION]
        os.kill(pod.pid, signal.SIGKILL)
        after = wait_until(
            lambda: (code := link_page.shown_code(visit, double)) not in (None, before) and code,
            90,
            "the restarted pod's QR on the page",
        )
        assert after != before
        assert visit.page.evaluate("() => window.sameDocument === true"), "the page reloaded"
    finally:
        visit.close()
    metrics = local.get("/metrics").text
    assert "wa_router_link_stream_errors_total 0.0" not in metrics


def test_link_url_answers_rails_in_the_seeds_shapes(local: LocalMode) -> None:
    no_token = requests.post(
        f"{local.url}/link_url", json={"location_identifier": QR_LOCATION}, timeout=10
    )
    assert no_token.status_code == 401
    unknown = local.post("/link_url", {"location_identifier": "nowhere"})
    assert unknown.status_code == 400 and "POST /login first" in unknown.json()["message"]
    for bad in ({"ttl_seconds": 5}, {"ttl_seconds": "600"}, {"location_name": ""}):
        answer = local.post("/link_url", {"location_identifier": EXPIRY_LOCATION, **bad})
        assert answer.status_code == 400 and answer.json()["success"] is False, (bad, answer.text)
    longer = local.post("/link_url", {"location_identifier": EXPIRY_LOCATION, "ttl_seconds": 3600})
    assert longer.ok and longer.json()["url"].startswith(f"{local.url}/link/")

    paths = local.get("/openapi.json").json()["paths"]
    assert {"/link_url", "/pairing_code", "/link/{token}"} <= set(paths)
    pairing = local.post(
        "/pairing_code", {"location_identifier": "nowhere", "phone_number": "5491100000000"}
    )
    assert pairing.status_code == 400 and "POST /login first" in pairing.json()["message"]
