"""Nothing doubled, nothing lost: sends with an idempotency key reach WhatsApp once, and every
customer message reaches Rails, whatever crashes when. A real pod, real Chromium, the double
(which counts every delivery of a message id, so a second send is visible), a real receiver
for Rails; crashes at precise moments (the double's faults, a full disk) and at random (the
browser or the whole pod killed -9)."""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support.job_queue import JobQueue
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, SessionPod, new_phone

pytestmark = pytest.mark.slow
StartPod = Callable[..., SessionPod]
FAST = {"SEND_RATE_PER_MINUTE": "0", "LOAD_TIMEOUT_SECONDS": "15"}


@pytest.fixture
def rails() -> Iterator[RailsReceiver]:
    receiver = RailsReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def send(pod: SessionPod, receiver: str, text: str, key: str) -> requests.Response:
    """One /send_message with an idempotency key."""
    return requests.post(
        f"{pod.url}/send_message",
        json={"location_identifier": pod.location, "receiver_phone": receiver, "message": text},
        headers={**pod.auth, "Idempotency-Key": key},
        timeout=30,
    )


def send_until_answered(pod: SessionPod, receiver: str, text: str, key: str) -> dict[str, Any]:
    """As Rails' job queue does: the same key again until the answer is a 200."""

    def answered() -> dict[str, Any] | None:
        response = send(pod, receiver, text, key)
        return response.json() if response.status_code == 200 else None

    return wait_until(answered, 60, f"an answer for key {key}", interval=0.5)


def deliveries(double: Double, phone: str, message_id: str) -> int:
    return sum(m["deliveries"] for m in double.phone(phone)["messages"] if m["id"] == message_id)


def start_linked(
    start_pod: StartPod, double: Double, location: str, data: Path, **env: str
) -> tuple[SessionPod, str, str]:
    """A linked pod, its phone, and a customer registered on WhatsApp."""
    phone, customer = new_phone(), new_phone()
    pod = start_pod(location, data, **FAST, **env)
    pod.link(double, phone)
    double.register(customer)
    return pod, phone, customer


@pytest.fixture
def linked(start_pod: StartPod, double: Double, tmp_path: Path) -> tuple[SessionPod, str, str]:
    return start_linked(start_pod, double, "31", tmp_path / "pod")


@pytest.mark.parametrize("fault", ["hang_before_send", "crash_after_taking_send"])
def test_a_crash_at_either_side_of_the_send_leaves_one_message(
    linked: tuple[SessionPod, str, str], double: Double, fault: str
) -> None:
    """Before the message leaves: not in WhatsApp after the relaunch, sent then under the
    chosen id. After WhatsApp took it: found, and the key gets that first send's answer."""
    pod, phone, customer = linked
    double.control("POST", f"/phones/{phone}/fault", {"fault": fault})
    first = send(pod, customer, f"turno {fault}", "k-" + fault)
    assert first.status_code == 503, first.text
    assert "retry with the same idempotency key" in first.json()["message"]
    answer = send_until_answered(pod, customer, f"turno {fault}", "k-" + fault)
    assert deliveries(double, phone, answer["id"]) == 1
    again = send(pod, customer, f"turno {fault}", "k-" + fault)
    assert again.status_code == 200 and again.json() == answer
    assert again.headers["Idempotent-Replayed"] == "true"
    record = pod.get(f"/messages/{answer['id']}").json()
    assert record["attempts"] == 1 and record["message_ids"] == [answer["id"]]


def test_a_ledger_write_failing_after_whatsapp_took_it_resolves_the_same_way(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    """The pod's volume fills up while WhatsApp holds the message: the outcome cannot be
    written, the key stays bound to the message id, and the retry finds it in WhatsApp."""
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(volume)], check=True)
    try:
        pod, phone, customer = start_linked(start_pod, double, "32", volume / "pod")
        double.control("POST", f"/phones/{phone}/hold_sends", {"hold": True})
        answers: list[requests.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(send(pod, customer, "lleno", "k-full")), daemon=True
        )
        sender.start()
        time.sleep(1)  # the message is chosen, written, and waits on WhatsApp
        filler = volume / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
        double.control("POST", f"/phones/{phone}/hold_sends", {"hold": False})
        sender.join(30)
        [first] = answers
        assert first.status_code == 500, first.text
        filler.unlink()
        answer = send_until_answered(pod, customer, "lleno", "k-full")
        assert deliveries(double, phone, answer["id"]) == 1
        assert send(pod, customer, "lleno", "k-full").headers["Idempotent-Replayed"] == "true"
        pod.stop()
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_a_pod_killed_while_whatsapp_holds_the_message_answers_it_after_the_restart(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    pod, phone, customer = start_linked(start_pod, double, "33", tmp_path / "pod")
    pod.events.wait_for("remote_session_saved")  # the login is on the volume
    double.control("POST", f"/phones/{phone}/hold_sends", {"hold": True})
    threading.Thread(target=lambda: send(pod, customer, "kill", "k-kill"), daemon=True).start()
    time.sleep(1)
    pod.kill()
    double.control("POST", f"/phones/{phone}/hold_sends", {"hold": False})
    again = start_pod("33", tmp_path / "pod", **FAST)
    early = send(again, customer, "kill", "k-kill")
    assert early.status_code in (200, 400, 409), early.text  # 409/400 until it is ready
    answer = send_until_answered(again, customer, "kill", "k-kill")
    taken = [m for m in double.phone(phone)["messages"] if m["body"] == "kill"]
    assert len(taken) <= 1 and sum(m["deliveries"] for m in taken) <= 1
    assert deliveries(double, phone, answer["id"]) == 1


def test_a_message_the_page_took_before_a_crash_still_reaches_rails(
    start_pod: StartPod, double: Double, rails: RailsReceiver, tmp_path: Path
) -> None:
    phone, customer = new_phone(), new_phone()
    pod = start_pod("34", tmp_path / "pod", **FAST, **rails.env("s"))
    pod.link(double, phone)
    double.control("POST", f"/phones/{phone}/fault", {"fault": "hang_after_taking_incoming"})
    sent = double.control("POST", f"/phones/{phone}/incoming", {"from": customer, "body": "hola"})
    wait_until(lambda: not double.phone(phone)["held"], 10, "the page to take the message")
    webhook = wait_until(
        lambda: [e for e in rails.events("message") if e["event_id"] == sent["id"]],
        60,
        "the message webhook after the relaunch's catch-up",
    )
    assert webhook[0]["data"]["body"] == "hola"
    assert len(pod.events.of_type("message")) == 1


# --- chaos -------------------------------------------------------------------------------


def chromium_browsers(pod: SessionPod) -> list[psutil.Process]:
    """The pod's browser process (the one without --type=): killing it kills its renderers."""
    children = psutil.Process(pod.program.pid).children(recursive=True)
    return [p for p in children if "chrom" in p.name() and "--type=" not in " ".join(p.cmdline())]


def check_sends(
    chaos: JobQueue, pod: Callable[[], SessionPod], double: Double, phone: str
) -> dict[str, int]:
    taken = [m for m in double.phone(phone)["messages"] if m["fromMe"]]
    by_text: dict[str, int] = {}
    for message in taken:
        by_text[message["body"]] = by_text.get(message["body"], 0) + message["deliveries"]
    keys = chaos.keys
    duplicates = sum(1 for key in keys if by_text.get(chaos.text(key), 0) > 1)
    unanswered = [k for k in keys if k not in chaos.answers]
    lost = [k for k in chaos.answers if by_text.get(chaos.text(k), 0) == 0]
    figures = {"keys": len(keys), "messages": len(taken), "duplicates": duplicates}
    print(f"send chaos: {figures}, unanswered {len(unanswered)}, lost {len(lost)}")
    for key in unanswered:
        print(f"unanswered {key}: {chaos.last.get(key)}")
    assert duplicates == 0
    assert unanswered == [], f"{pod().status()}\n{pod().program.log_tail(60)}"
    assert lost == []
    return figures


def run_send_chaos(
    pod: Callable[[], SessionPod], customer: str, seconds: float, kill: Callable[[], None]
) -> JobQueue:
    chaos = JobQueue(lambda _, key, text: send(pod(), customer, text, key))
    clients = [threading.Thread(target=chaos.client, args=(f"c{i}",)) for i in range(4)]
    for client in clients:
        client.start()
    rng = random.Random(23)
    kills = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.5, 4.0))
        kill()
        kills += 1
    chaos.stop.set()
    for client in clients:
        client.join(120)
    chaos.finish(180)
    print(f"send chaos: {kills} kills in {seconds:.0f}s")
    return chaos


def test_chaos_sends_while_the_browser_is_killed(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    pod, phone, customer = start_linked(start_pod, double, "41", tmp_path / "pod")

    def kill_browser() -> None:
        for browser in chromium_browsers(pod):
            browser.kill()

    chaos = run_send_chaos(lambda: pod, customer, 30, kill_browser)
    figures = check_sends(chaos, lambda: pod, double, phone)
    assert figures["keys"] >= 20


def test_chaos_sends_while_the_whole_pod_is_killed(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    data = tmp_path / "pod"
    pod, phone, customer = start_linked(start_pod, double, "42", data)
    pod.events.wait_for("remote_session_saved")
    current = [pod]

    def kill_pod() -> None:
        current[-1].kill()
        current.append(start_pod("42", data, **FAST))

    chaos = run_send_chaos(lambda: current[-1], customer, 30, kill_pod)
    figures = check_sends(chaos, lambda: current[-1], double, phone)
    assert figures["keys"] >= 10


def test_chaos_a_customer_writes_while_the_pod_is_killed(
    start_pod: StartPod, double: Double, rails: RailsReceiver, tmp_path: Path
) -> None:
    phone, customer = new_phone(), new_phone()
    data = tmp_path / "pod"
    env = {**FAST, **rails.env("s")}
    pod = start_pod("43", data, **env)
    pod.link(double, phone)
    pod.events.wait_for("remote_session_saved")
    written: list[str] = []
    stop = threading.Event()

    def customer_writes() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            sent = double.control(
                "POST", f"/phones/{phone}/incoming", {"from": customer, "body": f"m{n}"}
            )
            written.append(sent["id"])
            time.sleep(0.15)

    writer = threading.Thread(target=customer_writes)
    writer.start()
    rng = random.Random(43)
    kills, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(2.0, 4.0))
        pod.kill()
        pod = start_pod("43", data, **env)
        kills += 1
    stop.set()
    writer.join(10)

    def missing() -> list[str]:
        delivered = {e["event_id"] for e in rails.events("message")}
        return [i for i in written if i not in delivered]

    with contextlib.suppress(AssertionError):
        wait_until(lambda: not missing(), 90, "every customer message at Rails")
    assert missing() == [], f"of {len(written)}; {pod.program.log_tail(30)}"
    delivered = [e for e in rails.events("message") if e["event_id"] in set(written)]
    print(
        f"incoming chaos: {len(written)} written, {kills} pod kills, "
        f"{len({e['event_id'] for e in delivered})} delivered, "
        f"{len(delivered) - len({e['event_id'] for e in delivered})} repeated deliveries"
    )
    assert {e["event_id"] for e in delivered} == set(written)
    shutil.rmtree(data, ignore_errors=True)


def test_a_crash_during_a_watchdog_resend_sends_that_resend_once(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    """The ack watchdog's resend takes the send path: its id is written before it goes out,
    so a browser that hangs before the resend leaves resolves it after the relaunch."""
    pod, phone, customer = start_linked(
        start_pod,
        double,
        "35",
        tmp_path / "pod",
        ACK_DEADLINE_SECONDS="2",
        ACK_CHECK_INTERVAL_SECONDS="0.5",
        ACK_MAX_ATTEMPTS="2",
    )
    double.control("POST", f"/phones/{phone}/acks", {"auto": False})  # stuck at one tick
    first = send_until_answered(pod, customer, "sin recibir", "k-resend")
    double.control("POST", f"/phones/{phone}/fault", {"fault": "hang_before_send"})
    record = wait_until(
        lambda: (
            (r := pod.get(f"/messages/{first['id']}").json())["attempts"] == 2
            and len(r["message_ids"]) == 2
            and r
        ),
        60,
        "the watchdog's resend, resolved after the relaunch",
    )
    resend_id = record["message_ids"][1]
    wait_until(lambda: deliveries(double, phone, resend_id) == 1, 30, "the resend in WhatsApp")
    assert deliveries(double, phone, first["id"]) == 1
    assert pod.events.wait_for("message_stuck", lambda d: d["action"] == "resent")
    time.sleep(3)  # the deadline of the resend passes: given up, nothing more is sent
    assert deliveries(double, phone, resend_id) == 1
    assert [m["body"] for m in double.phone(phone)["messages"]].count("sin recibir") == 2
