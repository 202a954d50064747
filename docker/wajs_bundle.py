"""Fetches the pinned wa-js bundle for the session pod image without npm: the version and the
sha512 integrity come from package-lock.json (what `npm ci` would check), the tarball from the
npm registry, and only dist/wppconnect-wa.js is written out.

python3 docker/wajs_bundle.py package-lock.json OUT_FILE
(NPM_CONFIG_REGISTRY overrides the registry)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "@wppconnect/wa-js"
MEMBER = "package/dist/wppconnect-wa.js"


def pinned(lock_file: Path) -> tuple[str, str]:
    """(version, integrity) of the wa-js package in an npm lockfile v2/v3."""
    entry = json.loads(lock_file.read_text())["packages"][f"node_modules/{PACKAGE}"]
    return entry["version"], entry["integrity"]


def fetch(version: str, integrity: str, registry: str) -> bytes:
    """The package tarball, checked against the lockfile's sha512 integrity."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"unsupported integrity {algorithm!r} for {PACKAGE}")
    url = f"{registry.rstrip('/')}/{PACKAGE}/-/{PACKAGE.split('/')[1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=120) as response:
        tarball = response.read()
    actual = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{url}: sha512 {actual} is not the lockfile's {expected}")
    return tarball


def bundle(tarball: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"{MEMBER} is not a file in the {PACKAGE} tarball")
        return member.read()


def main() -> None:
    lock_file, out_file = Path(sys.argv[1]), Path(sys.argv[2])
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org"
    version, integrity = pinned(lock_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(bundle(fetch(version, integrity, registry)))
    print(f"{PACKAGE} {version}: {out_file} ({out_file.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
