"""Local mode (`python -m whatsapp_router.local`), the whole journey without Kubernetes: the
router starts a session pod process on /login, the QR is served and printed, a scan links
it, a message is sent and acked to Rails, a killed pod comes back linked, stopping local
mode stops every process it started, and the next start brings the location back."""

from __future__ import annotations

import base64
import os
import signal
import stat
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.local_mode import LocalMode, gone, qr_banner
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, new_phone
from whatsapp_common.keys import parse_ring
from whatsapp_common.pod_auth import PURPOSE, pod_tokens

pytestmark = pytest.mark.slow
LOCATION = "31"
QR_BANNER = qr_banner(LOCATION)


def assert_pod_holds_no_master_key(data: Path, pod: psutil.Process) -> None:
    """The master keys stay in local mode's files (0600); the pod's environment holds its own
    location's derived keys and tokens, and neither it nor any file of the pod holds a
    master."""
    for name in ("backup-keys", "pod-auth-keys", "link-keys"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    masters = parse_ring((data / "backup-keys").read_text())
    pod_auth = parse_ring((data / "pod-auth-keys").read_text())
    link = parse_ring((data / "link-keys").read_text())
    environ = pod.environ()
    assert not {"BACKUP_MASTER_KEYS", "POD_AUTH_MASTER_KEYS", "LINK_MASTER_KEYS"} & set(environ)
    assert environ["LINK_KEYS"] == link.derive("link-token", LOCATION).to_text()
    assert environ["BACKUP_KEYS"] == masters.derive("backup", LOCATION).to_text()
    assert environ["POD_TOKENS"] == pod_auth.derive(PURPOSE, LOCATION).to_text()
    (pod_dir,) = (data / "sessions").iterdir()
    files = [p for p in pod_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files
    for master in (*masters, *pod_auth, *link):
        encoded = base64.b64encode(master.secret).decode()
        assert all(encoded not in value for value in environ.values())
        for path in files:
            content = path.read_bytes()
            assert master.secret not in content and encoded.encode() not in content, path


def assert_pod_refuses_strangers(local: LocalMode, data: Path, pod: psutil.Process) -> None:
    """Another user of the machine calls the pod's port directly: with no credential, a wrong
    one or the router's own token, every call is a 401; the derived token is let in."""
    url = f"http://127.0.0.1:{pod.environ()['PORT']}"
    calls = [
        ("GET", "/status"),
        ("GET", "/chats"),
        ("POST", "/send_message"),
        ("GET", "/messages"),
        ("GET", "/webhooks/failed"),
        ("GET", "/events"),
    ]
    strangers = [{}, {"Authorization": "Bearer wrong-0123456789abcdef"}, local.auth]
    for headers in strangers:
        for method, path in calls:
            answer = requests.request(method, f"{url}{path}", headers=headers, timeout=10)
            assert answer.status_code == 401, (headers.keys(), path, answer.text)
    token = pod_tokens(parse_ring((data / "pod-auth-keys").read_text()).derive(PURPOSE, LOCATION))
    let_in = {"Authorization": f"Bearer {token[0].value}"}
    assert requests.get(f"{url}/status", headers=let_in, timeout=10).json()["state"] == "ready"


def test_local_mode_runs_the_whole_journey(
    double: Double, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rails = RailsReceiver()
    rails.start()
    env = {
        **rails.env("local-secret"),
        **double.session_env(),
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
    }
    monkeypatch.delenv("ROUTER_TOKEN", raising=False)  # local mode makes and prints one
    data = tmp_path / "data"
    local = LocalMode(data, tmp_path / "terminal-1.log", env)
    try:
        login = local.post("/login", {"location_identifier": LOCATION, "user_id": 1})
        assert login.ok and LOCATION in login.json()["body"], login.text

        local.wait_state(LOCATION, "qr_required")
        code = local.get("/qr", location_identifier=LOCATION).json()["qr"]
        png = local.get("/qr", location_identifier=LOCATION, format="png")
        assert png.headers["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"
        wait_until(local.printed_qr, 10, "the QR printed in the terminal")

        phone, receiver = new_phone(), new_phone()
        double.scan(code, phone)
        assert local.wait_state(LOCATION, "ready")["phone"] == phone
        double.register(receiver)
        send = {"location_identifier": LOCATION, "receiver_phone": receiver, "message": "Hola"}
        sent = local.post("/send_message", send)
        assert sent.status_code == 200 and sent.json()["id"], sent.text
        wait_until(
            lambda: [
                e for e in rails.events("message_ack") if e["data"]["id"] == sent.json()["id"]
            ],
            30,
            "the ack webhook",
        )

        (pod,) = local.session_pods()
        assert_pod_holds_no_master_key(data, pod)
        assert_pod_refuses_strangers(local, data, pod)
        killed = local.descendants()  # the pod, its Playwright driver, its browser
        os.kill(pod.pid, signal.SIGKILL)
        wait_until(
            lambda: [p.pid for p in local.session_pods()] not in ([], [pod.pid]),
            20,
            "the session pod restarted",
        )
        wait_until(lambda: all(gone(p) for p in killed), 10, "the killed pod's browser gone")
        assert local.wait_state(LOCATION, "ready")["phone"] == phone
        assert local.output().count(QR_BANNER) == 1, "a new QR after the restart"
        # /sessions follows the pod within a poll interval, as the operator's status does.
        wait_until(lambda: local.get("/sessions").json()["body"][0]["phase"] == "Ready", 5, "Ready")
        (listed,) = local.get("/sessions").json()["body"]
        assert listed["routable"] is True and listed["phone"] == phone, listed
        assert code not in local.output(), "the raw QR string reached the terminal"
        local.terminate()

        local = LocalMode(data, tmp_path / "terminal-2.log", env)
        assert local.wait_state(LOCATION, "ready")["phone"] == phone
        assert QR_BANNER not in local.output()
        local.terminate()
    finally:
        local.program.stop()
        rails.stop()
