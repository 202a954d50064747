"""Images for the real test node: the project's three (scripts/images.sh, cached by content in
podman's storage) and the pause image built from the node's own static pause binary, copied
into containerd (`podman save` | `ctr import`) unless containerd already has that content
(each image's tag is the hash of its inputs, so a present tag means the same content)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.processes import REPO

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CONTAINERS_CONF = REPO / "docker" / "containers.conf"
PAUSE_LABEL = "io.whatsapp-sessions.pause-sha256"


def _podman(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, check=False, **kwargs
    )


def project_images() -> dict[str, str]:
    """{name: content-tagged reference} of session-pod, operator and router, built when their
    inputs changed (scripts/images.sh prints `NAME REF SIZE built|cached SECONDS`)."""
    result = subprocess.run(
        [str(REPO / "scripts" / "images.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/images.sh failed:\n{result.stderr[-3000:]}")
    return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}


def pause_image(pause_binary: Path) -> str:
    """registry.k8s.io/pause:3.10 in podman's storage: the static pause binary FROM scratch."""
    digest = hashlib.sha256(pause_binary.read_bytes()).hexdigest()
    have = _podman(
        "image", "inspect", "--format", f'{{{{ index .Labels "{PAUSE_LABEL}" }}}}', PAUSE_IMAGE
    )
    if have.returncode == 0 and have.stdout.strip() == digest:
        return PAUSE_IMAGE
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "pause").write_bytes(pause_binary.read_bytes())
        (Path(context) / "pause").chmod(0o755)
        (Path(context) / "Containerfile").write_text(
            f'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nLABEL {PAUSE_LABEL}="{digest}"\n'
            'ENTRYPOINT ["/pause"]\n'
        )
        built = _podman("build", "-q", "--network=none", "-t", PAUSE_IMAGE, context)
    if built.returncode != 0:
        raise RuntimeError(f"building {PAUSE_IMAGE}: {built.stderr}")
    return PAUSE_IMAGE


class Containerd:
    """`ctr` against one containerd socket, in the CRI's namespace k8s.io."""

    def __init__(self, ctr: str, address: Path) -> None:
        self.ctr = ctr
        self.address = address

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.ctr, "--address", str(self.address), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result

    def has_image(self, reference: str) -> bool:
        return bool(self.run("images", "ls", "-q", f"name=={reference}").stdout.strip())

    def import_from_podman(self, reference: str) -> float:
        """Copies one image from podman into containerd; returns the seconds it took
        (0 when containerd already had it)."""
        if self.has_image(reference):
            return 0.0
        start = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            archive = Path(work) / "image.tar"
            saved = _podman("save", "--format", "docker-archive", "-o", str(archive), reference)
            if saved.returncode != 0:
                raise RuntimeError(f"podman save {reference}: {saved.stderr}")
            self.run("images", "import", str(archive))
        if not self.has_image(reference):
            raise RuntimeError(f"ctr images import did not add {reference}")
        self._remove_older(reference)
        return time.monotonic() - start

    def _remove_older(self, reference: str) -> None:
        """Other content tags of the same repository: images of older inputs."""
        repository = reference.rsplit(":", 1)[0]
        for listed in self.run("images", "ls", "-q").stdout.split():
            name, _, tag = listed.rpartition(":")
            if name == repository and tag.startswith("src-") and listed != reference:
                self.run("images", "rm", listed, check=False)
