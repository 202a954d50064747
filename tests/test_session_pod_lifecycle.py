"""Session pod lifecycle against the double: logout, remote logout, crashes, SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable

import psutil
import pytest

from tests.support.processes import wait_until
from tests.support.session_pods import Double, SessionPod, new_phone

pytestmark = pytest.mark.slow
StartPod = Callable[..., SessionPod]


def chromium_processes(pod: SessionPod) -> list[psutil.Process]:
    """The pod's Chromium processes: under the pod's process, or (orphaned) on its profile.
    (chromium-headless-shell's renderers do not name the profile.)"""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        for process in psutil.Process(pod.program.pid).children(recursive=True):
            if "chrom" in process.name():
                found[process.pid] = process
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "chromium" in cmdline and str(pod.data_dir) in cmdline:
            found[process.pid] = process
    return list(found.values())


def test_send_before_login_is_the_seed_being_initialized_400(start_pod: StartPod) -> None:
    pod = start_pod()
    pod.wait_state("qr_required")
    response = pod.post(
        "/send_message",
        {"location_identifier": "13", "receiver_phone": "5491100000000", "message": "hola"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert "being initialized" in body["message"]
    assert body["state"] == "qr_required"
    assert response.headers["Retry-After"] == "5"


def test_qr_as_json_and_png(start_pod: StartPod) -> None:
    pod = start_pod()
    pod.wait_state("qr_required")
    qr = wait_until(lambda: (r := pod.get("/qr")).ok and r.json(), 10, "a QR code")
    assert qr["qr"].startswith("2@")
    assert qr["expires_at"] > qr["issued_at"]
    png = pod.get("/qr", format="png")
    assert png.headers["Content-Type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert pod.get("/qr", format="svg").status_code == 400
    assert "2@" not in pod.program.log_path.read_text(), "the QR code must never be logged"


def test_logout_unlinks_and_login_shows_a_new_qr(start_pod: StartPod, double: Double) -> None:
    pod, phone = start_pod(), new_phone()
    pod.link(double, phone)
    response = pod.post("/logout", {"location_identifier": "13", "user_id": 7})
    assert response.status_code == 200
    assert response.json() == {
        "code": 200,
        "status": "success",
        "body": "Logout process completed for 13",
    }
    assert pod.status()["state"] == "logged_out"
    assert double.phone(phone)["linked"] is False
    assert chromium_processes(pod) == []
    response = pod.post("/login", {"location_identifier": "13", "user_id": 7})
    assert response.json() == {
        "code": 200,
        "status": "success",
        "body": "Initialization process started for 13",
    }
    pod.wait_state("qr_required")


def test_remote_logout_goes_back_to_qr_required(start_pod: StartPod, double: Double) -> None:
    pod, phone = start_pod(), new_phone()
    pod.link(double, phone)
    double.control("POST", f"/phones/{phone}/logout")
    pod.events.wait_for("disconnected", lambda d: d["reason"] == "logout")
    pod.wait_state("qr_required")
    assert wait_until(lambda: pod.get("/qr").ok, 10, "a new QR code")
    assert pod.status()["phone"] is None


def test_a_hung_page_is_relaunched_and_ready_without_a_new_qr(
    start_pod: StartPod, double: Double
) -> None:
    pod, phone = start_pod(), new_phone()
    pod.link(double, phone)
    qr_events = len(pod.events.of_type("qr"))
    double.control("POST", f"/phones/{phone}/crash")
    pod.events.wait_for("disconnected", lambda d: "answering" in d["reason"], timeout=20)
    wait_until(lambda: len(pod.events.of_type("ready")) == 2, 30, "ready again")
    assert pod.status()["state"] == "ready"
    assert len(pod.events.of_type("qr")) == qr_events


def test_a_killed_renderer_is_relaunched_and_ready_without_a_new_qr(
    start_pod: StartPod, double: Double
) -> None:
    pod, phone = start_pod(), new_phone()
    pod.link(double, phone)
    renderers = [p for p in chromium_processes(pod) if "--type=renderer" in " ".join(p.cmdline())]
    assert renderers
    for renderer in renderers:
        renderer.kill()
    pod.events.wait_for("disconnected", timeout=20)
    wait_until(lambda: len(pod.events.of_type("ready")) == 2, 30, "ready again")
    assert pod.status()["phone"] == phone
    assert len(pod.events.of_type("qr")) == 1


def test_sigterm_closes_the_browser_and_exits_within_seconds(
    start_pod: StartPod, double: Double
) -> None:
    pod = start_pod()
    pod.link(double, new_phone())
    browsers = chromium_processes(pod)
    assert browsers
    started = time.monotonic()
    pod.program.process.send_signal(signal.SIGTERM)
    assert pod.program.process.wait(15) == 0
    assert time.monotonic() - started < 10
    wait_until(
        lambda: not any(p.is_running() and p.status() != "zombie" for p in browsers),
        5,
        "the browser to exit",
    )
    assert '"msg": "stopped"' in pod.program.log_path.read_text()


def test_chromium_extra_args_reach_the_browser_and_no_spare_renderer_waits(
    start_pod: StartPod, double: Double
) -> None:
    """Chromium reads the last --disable-features only: Playwright's list, the pod's and
    CHROMIUM_EXTRA_ARGS' reach it as one. The memory levers kept by default reach the browser
    (CHROMIUM_MEMORY_ARGS) and Playwright's node driver (DRIVER_NODE_OPTIONS)."""
    pod = start_pod(
        CHROMIUM_EXTRA_ARGS="--renderer-process-limit=4 --disable-breakpad"
        " --disable-features=Translate --enable-features=ParallelDownloading"
    )
    pod.link(double, new_phone())
    browser = next(p for p in chromium_processes(pod) if "--type=" not in " ".join(p.cmdline()))
    cmdline = browser.cmdline()
    assert "--renderer-process-limit=4" in cmdline
    assert "--disable-breakpad" in cmdline
    disabled = [a for a in cmdline if a.startswith("--disable-features=")]
    enabled = [a for a in cmdline if a.startswith("--enable-features=")]
    assert len(disabled) == 1 and len(enabled) == 1, cmdline
    disabled_features = disabled[0].split("=", 1)[1].split(",")
    # Playwright's own (HttpsUpgrades...), the pod's, the extra one
    assert {"HttpsUpgrades", "SpareRendererForSitePerProcess", "Translate"} <= set(
        disabled_features
    )
    assert {"CDPScreenshotNewSurface", "NetworkServiceInProcess2", "ParallelDownloading"} <= set(
        enabled[0].split("=", 1)[1].split(",")
    )
    assert "--in-process-gpu" in cmdline and "--no-zygote" in cmdline
    kinds = {a for p in chromium_processes(pod) for a in p.cmdline() if a.startswith("--type=")}
    assert kinds == {"--type=renderer"}, kinds  # no GPU process, no zygote
    sub_types = {a for p in chromium_processes(pod) for a in p.cmdline() if "sub-type=" in a}
    assert not [a for a in sub_types if "network" in a], sub_types
    driver = next(p for p in psutil.Process(pod.program.pid).children() if "node" in p.name())
    assert driver.environ()["NODE_OPTIONS"] == "--max-semi-space-size=1"
    renderers = [p for p in chromium_processes(pod) if "--type=renderer" in " ".join(p.cmdline())]
    assert len(renderers) <= 2, [p.cmdline()[-3:] for p in renderers]
