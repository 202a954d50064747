"""Local mode (`python -m whatsapp_router.local`) as a process, as a developer runs it."""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path

import psutil
import requests

from .processes import Program, free_port, wait_until
from .router import RouterClient


def qr_banner(location: str) -> str:
    return f"Scan this QR code with WhatsApp (Linked devices) for location {location}:"


class LocalMode(RouterClient):
    """The local mode process; its stdout+stderr (the developer's terminal) in a file."""

    def __init__(
        self, data_root: Path, terminal: Path, env: dict[str, str], location: str = "31"
    ) -> None:
        self.location = location
        port = free_port()
        self.program = Program(
            "whatsapp_router.local",
            [],
            {"LOCAL_DATA_DIR": str(data_root), "PORT": str(port), **env},
            terminal,
        )
        token = wait_until(
            lambda: re.search(r"^token: (\S+)", self.output(), re.M), 20, "the printed token"
        )[1]
        super().__init__(f"http://127.0.0.1:{port}", token)
        wait_until(lambda: requests.get(f"{self.url}/readyz", timeout=2).ok, 20, "readyz")

    def output(self) -> str:
        return self.program.log_path.read_text(errors="replace")

    def printed_qr(self) -> bool:
        """segno's compact rendering under the banner: quiet zone, then a finder pattern."""
        _, banner, after = self.output().partition(qr_banner(self.location))
        lines = after.splitlines()[1:4]
        return bool(banner) and len(lines) == 3 and lines[2].startswith("████ ▄▄▄▄▄ █")

    def session_pods(self) -> list[psutil.Process]:
        pods = []
        for child in psutil.Process(self.program.pid).children():
            with contextlib.suppress(psutil.Error):  # a zombie until local mode reaps it
                if "session_pod" in child.cmdline():
                    pods.append(child)
        return pods

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.program.pid).children(recursive=True)

    def terminate(self) -> None:
        """SIGTERM, as a Ctrl-C would: exits 0 and leaves no process behind."""
        started = self.descendants()
        assert started, "no session pod process"
        self.program.process.send_signal(signal.SIGTERM)
        assert self.program.process.wait(40) == 0, self.program.log_tail()
        assert all(gone(p) for p in started), [p for p in started if not gone(p)]


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
