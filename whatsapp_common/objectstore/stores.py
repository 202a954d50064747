"""Where backups live: S3 (any S3 API via an endpoint URL) or a local directory.

The session pod keeps its versioned backups here; the operator deletes a location's.

Every method is async and runs its blocking I/O in a worker thread. Keys are `/`-separated.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from whatsapp_common.files import PARTIAL, atomic_file

from .errors import (
    ObjectNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)

T = TypeVar("T")

_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_RETRYABLE_CODES = {
    "InternalError",
    "RequestTimeout",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
}


class BackupStore(Protocol):
    async def put(self, key: str, path: Path) -> None:
        """Uploads the file at `path` as `key` (replacing it)."""

    async def get(self, key: str, path: Path) -> None:
        """Downloads `key` to `path`; raises ObjectNotFound when it does not exist."""

    async def list(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""

    async def delete(self, keys: list[str]) -> None:
        """Deletes `keys`, in order; missing keys are not an error."""


class LocalStore:
    """A directory as a store; writes go to a temporary file renamed into place."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.directory)!r})"

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(_local_call, lambda: _atomic_copy(path, self._path(key)), key)

    async def get(self, key: str, path: Path) -> None:
        await asyncio.to_thread(_local_call, lambda: _atomic_copy(self._path(key), path), key)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(_local_call, lambda: self._list(prefix), prefix)

    async def delete(self, keys: list[str]) -> None:
        def delete() -> None:
            for key in keys:
                self._path(key).unlink(missing_ok=True)

        await asyncio.to_thread(_local_call, delete, ",".join(keys))

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.endswith(PARTIAL) or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid store key {key!r}")
        return self.directory.joinpath(*parts)

    def _list(self, prefix: str) -> list[str]:
        base = self.directory.joinpath(*prefix.split("/")[:-1])
        if not base.is_dir():
            return []
        keys = (
            path.relative_to(self.directory).as_posix()
            for path in base.rglob("*")
            if path.is_file() and not path.name.endswith(PARTIAL)
        )
        return sorted(key for key in keys if key.startswith(prefix))


def _atomic_copy(source: Path, target: Path) -> None:
    with source.open("rb") as src, atomic_file(target) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)


def _local_call(call: Callable[[], T], key: str) -> T:
    try:
        return call()
    except FileNotFoundError as exc:
        raise ObjectNotFound(key) from exc
    except PermissionError as exc:
        raise StoreAccessDenied(f"local store: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"local store: {exc}") from exc


class S3Store:
    """A bucket of an S3 API (AWS, SeaweedFS, MinIO, ...) through boto3."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_attempts: int = 3,
    ) -> None:
        """Without credentials, boto3's default chain applies (env, web identity, instance role)."""
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    async def put(self, key: str, path: Path) -> None:
        def put() -> None:
            with path.open("rb") as body:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body)

        await asyncio.to_thread(_s3_call, put, key)

    async def get(self, key: str, path: Path) -> None:
        def get() -> None:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            with (
                contextlib.closing(response["Body"]) as body,
                atomic_file(path, durable=False) as out,
            ):
                for chunk in body.iter_chunks(1024 * 1024):
                    out.write(chunk)

        await asyncio.to_thread(_s3_call, get, key)

    async def list(self, prefix: str) -> list[str]:
        def list_keys() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

        return await asyncio.to_thread(_s3_call, list_keys, prefix)

    async def delete(self, keys: list[str]) -> None:
        def delete() -> None:
            for batch in _batches(keys, 1000):
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
                if errors := response.get("Errors"):
                    raise _from_code(errors[0].get("Code", ""), 0, str(errors[0]))

        await asyncio.to_thread(_s3_call, delete, ",".join(keys))


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _s3_call(call: Callable[[], T], key: str) -> T:
    """Runs a boto3 call, translating its errors into the store's three kinds."""
    try:
        return call()
    except StoreError:
        raise
    except ClientError as exc:
        error: dict[str, Any] = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code", ""))
        if code in _NOT_FOUND_CODES:
            raise ObjectNotFound(key) from exc
        raise _from_code(code, status, f"S3 {code or status}: {exc}") from exc
    except NoCredentialsError as exc:
        raise StoreAccessDenied(f"S3: {exc}") from exc
    except (BotoCoreError, OSError) as exc:
        raise StoreUnavailable(f"S3: {exc}") from exc


def _from_code(code: str, status: int, message: str) -> StoreError:
    if status >= 500 or status == 429 or code in _RETRYABLE_CODES:
        return StoreUnavailable(message)
    return StoreAccessDenied(message)
