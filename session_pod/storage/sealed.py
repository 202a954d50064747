"""Sealed backups: the manifest and the archive of one version in one encrypted object.

Streaming AES-256-GCM in 1 MiB chunks (the STREAM construction, as Tink's streaming AEAD):
- object key = HKDF(location key, salt = 16 random bytes of this object), so nonces never
  repeat under a key; chunk i's nonce is i (11 bytes) + the final flag (1 byte);
- every chunk's associated data is the header (format, key name, salt), the location, the
  version, the chunk index and the final flag: a chunk cannot be moved, dropped or cut off,
  and an object copied from another location or version fails authentication;
- the plaintext is the manifest's length (4 bytes), the manifest (JSON), then the tar.gz,
  so the bucket holds no file names, sizes or location beyond the object's key.

Memory: one chunk of plaintext and one of ciphertext at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from whatsapp_common.keys import KeyRing, NamedKey, hkdf

MAGIC = b"WASB\x01"
CHUNK = 1024 * 1024
SALT_BYTES = 16
TAG_BYTES = 16
_OBJECT_INFO = b"whatsapp-sessions/v1/backup-object"
_MANIFEST_LENGTH = 4


class SealError(Exception):
    """The object cannot be opened: unknown key, failed authentication, bad format."""


def is_sealed(head: bytes) -> bool:
    return head.startswith(MAGIC)


def _context(location: str, version: str) -> bytes:
    parts = [location.encode(), version.encode()]
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _aad(bound: bytes, index: int, final: bool) -> bytes:
    return bound + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def seal(
    archive: Path, manifest: bytes, dest: Path, key: NamedKey, location: str, version: str
) -> None:
    """Writes the sealed object of `manifest` + the file `archive` to `dest`."""
    name = key.name.encode()
    salt = os.urandom(SALT_BYTES)
    header = MAGIC + len(name).to_bytes(1, "big") + name + salt
    aead = AESGCM(hkdf(key.secret, _OBJECT_INFO, salt=salt))
    bound = header + _context(location, version)
    with archive.open("rb") as source, dest.open("wb") as out:
        out.write(header)
        pending = len(manifest).to_bytes(_MANIFEST_LENGTH, "big") + manifest
        index = 0
        while True:
            while len(pending) <= CHUNK and (more := source.read(CHUNK)):
                pending += more
            final = len(pending) <= CHUNK
            chunk, pending = pending[:CHUNK], pending[CHUNK:]
            out.write(aead.encrypt(_nonce(index, final), chunk, _aad(bound, index, final)))
            if final:
                return
            index += 1


def key_name(source: BinaryIO) -> str:
    """Reads the header's key name (the stream is left after the name)."""
    head = source.read(len(MAGIC) + 1)
    if not is_sealed(head) or len(head) < len(MAGIC) + 1:
        raise SealError("not a sealed backup object")
    name = source.read(head[-1])
    if len(name) != head[-1]:
        raise SealError("truncated header")
    return name.decode("ascii", "replace")


def unseal(sealed: Path, archive: Path, keys: KeyRing, location: str, version: str) -> bytes:
    """Writes the archive to `archive`, returns the manifest; raises SealError.

    Every chunk is authenticated before it is written; a failure at any chunk leaves a partial
    file that the caller discards."""
    with sealed.open("rb") as source:
        name = key_name(source)
        key = keys.get(name)
        if key is None:
            raise SealError(f"sealed with key {name!r}, not among this pod's keys {keys.names}")
        salt = source.read(SALT_BYTES)
        if len(salt) != SALT_BYTES:
            raise SealError("truncated header")
        header = MAGIC + len(name).to_bytes(1, "big") + name.encode() + salt
        aead = AESGCM(hkdf(key.secret, _OBJECT_INFO, salt=salt))
        bound = header + _context(location, version)
        chunks = _plain_chunks(source, aead, bound)
        buffered = b""
        for chunk in chunks:
            buffered += chunk
            if len(buffered) >= _MANIFEST_LENGTH:
                length = int.from_bytes(buffered[:_MANIFEST_LENGTH], "big")
                if len(buffered) >= _MANIFEST_LENGTH + length:
                    break
        else:
            raise SealError("the object ends inside its manifest")
        manifest = buffered[_MANIFEST_LENGTH : _MANIFEST_LENGTH + length]
        with archive.open("wb") as out:
            out.write(buffered[_MANIFEST_LENGTH + length :])
            for chunk in chunks:
                out.write(chunk)
    return manifest


def _plain_chunks(source: BinaryIO, aead: AESGCM, bound: bytes) -> Iterator[bytes]:
    """Decrypted chunks in order; the last one must carry the final flag."""
    size = CHUNK + TAG_BYTES
    block = source.read(size)
    index = 0
    while True:
        following = source.read(size) if len(block) == size else b""
        final = not following
        try:
            yield aead.decrypt(_nonce(index, final), block, _aad(bound, index, final))
        except InvalidTag:
            raise SealError(
                f"chunk {index} failed authentication (tampered, truncated, or sealed for"
                " another location or version)"
            ) from None
        if final:
            return
        block, index = following, index + 1
