"""Shared fixtures: one WhatsApp Web double for the whole run, session pods per test or module."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import Program, free_port, wait_until
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, SessionPod


@pytest.fixture(scope="session")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Double]:
    port = free_port()
    log = tmp_path_factory.mktemp("double") / "double.log"
    program = Program("tests.wa_double", ["--host", "127.0.0.1", "--port", str(port)], {}, log)
    wait_until(
        lambda: re.search(r"listening on http://127\.0\.0\.1", log.read_text()),
        20,
        "the WhatsApp Web double to listen",
    )
    yield Double(f"http://127.0.0.1:{port}")
    program.stop()


@pytest.fixture
def start_pod(double: Double, tmp_path: Path) -> Iterator[Callable[..., SessionPod]]:
    """Starts session pods for one test; each is stopped (SIGTERM) afterwards."""
    pods: list[SessionPod] = []

    def start(location: str = "13", data_dir: Path | None = None, **env: str) -> SessionPod:
        pod = SessionPod(location, data_dir or tmp_path / f"pod-{location}", double, env)
        pods.append(pod)
        return pod

    yield start
    for pod in pods:
        pod.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 API (SeaweedFS `weed mini`) on 127.0.0.1, credentials enforced."""
    with SeaweedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server
