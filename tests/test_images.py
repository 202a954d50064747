"""The three images as built (scripts/images.sh): each holds only what its program needs, runs
as uid 10001, says its version and source, and keeps no CA file or build secret in any layer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_pod.config import Settings
from tests.support.node_images import CONTAINERS_CONF, project_images

pytestmark = pytest.mark.slow


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_in(image: str, *command: str) -> str:
    result = podman("run", "--rm", "--network=none", image, *command)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install.sh installs it)")
    return project_images()


@pytest.fixture(scope="module")
def layer_files(
    images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, list[str]]]:
    """Every path in every layer of each image (`podman save` as a docker archive)."""
    found: dict[str, list[str]] = {}
    for name, reference in images.items():
        archive = tmp_path_factory.mktemp(name) / "image.tar"
        saved = podman("save", "--format", "docker-archive", "-o", str(archive), reference)
        assert saved.returncode == 0, saved.stderr
        paths: list[str] = []
        with tarfile.open(archive) as outer:
            for member in outer.getmembers():
                if member.name.endswith(".tar"):
                    layer = outer.extractfile(member)
                    assert layer is not None
                    with tarfile.open(fileobj=layer) as inner:
                        paths += inner.getnames()
        found[name] = paths
        archive.unlink()
    yield found


def test_each_image_runs_as_uid_10001_and_says_its_version_and_source(
    images: dict[str, str],
) -> None:
    for reference in images.values():
        config = json.loads(podman("image", "inspect", reference).stdout)[0]["Config"]
        assert config["User"] == "10001:10001"
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == "0.1.0"
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert len(labels["io.whatsapp-sessions.inputs"]) == 64
        assert run_in(reference, "id", "-u").strip() == "10001"


def test_router_and_operator_carry_no_browser_and_no_playwright(images: dict[str, str]) -> None:
    check = (
        "import importlib.util as u, shutil; "
        "print([m for m in ('playwright', 'segno') if u.find_spec(m)],"
        " shutil.which('chromium'), shutil.which('chromium-headless-shell'))"
    )
    for name in ("router", "operator"):
        assert run_in(images[name], "python3", "-c", check).strip() == "[] None None", name
    # Each still imports its own program.
    run_in(images["router"], "python3", "-c", "import whatsapp_router.__main__")
    # (handlers connects to the API server when imported; its modules are imported here)
    modules = "whatsapp_operator.reconcile, whatsapp_operator.removal, whatsapp_operator.status"
    run_in(images["operator"], "python3", "-c", f"import kopf, {modules}")


def test_the_session_pod_image_has_chromium_the_bundle_and_libatomic(
    images: dict[str, str],
) -> None:
    image = images["session-pod"]
    # The pod's default browser, where CHROMIUM_PATH says (config.py).
    assert run_in(image, "sh", "-c", "echo $CHROMIUM_PATH").strip() == Settings.chromium_path
    assert "Chromium" in run_in(image, Settings.chromium_path, "--version")
    # Playwright's node driver, which needs libatomic.so.1, answers.
    out = run_in(
        image,
        "sh",
        "-c",
        'exec "$(python3 -c "import playwright, os; '
        'print(os.path.dirname(playwright.__file__))")/driver/node" --version',
    )
    assert out.startswith("v"), out
    assert int(run_in(image, "stat", "-c", "%s", "/opt/wa-js/wppconnect-wa.js")) > 100_000


def test_no_layer_keeps_a_ca_file_or_build_secret(layer_files: dict[str, list[str]]) -> None:
    for name, paths in layer_files.items():
        leaked = [p for p in paths if "build-ca" in p or p.startswith(("run/secrets/", "src/"))]
        assert not leaked, f"{name}: {leaked}"
        # Only Debian's own bundle (ca-certificates), never the machine's bundle copied in.
        bundles = [p for p in paths if Path(p).name == "ca-certificates.crt"]
        assert all(p == "etc/ssl/certs/ca-certificates.crt" for p in bundles), (name, bundles)
