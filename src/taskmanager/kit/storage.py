"""Where attachment bytes live: a small async interface with a local-disk and an S3 backend.

``open_storage(settings)`` picks the backend from ``settings.effective_storage_url``:
``file:///absolute/dir`` (the default, ``<data dir>/attachments``) or ``s3://bucket/prefix``
(any S3-compatible store; endpoint, region and credentials come from the usual ``AWS_*``
variables, e.g. ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).

Every object is stored under a key the server generates (``new_key``: 32 hex digits), never
a name or path from the client. ``put`` streams: it hashes (SHA-256) and counts the bytes as
they are written and never holds more than one chunk (local disk) or one part (S3 multipart
upload, ``S3_PART_BYTES``) in memory; whatever goes wrong midway (the client's body passing
the upload limit included) leaves no object behind (a temporary file removed, a multipart
upload aborted). A crash midway can leave a temporary file or an unfinished multipart upload:
``abort_stale`` removes those, and the orphan sweep (``attachments.sweep``) removes objects
no attachment row references.

A row in ``attachments`` is what makes an object served: objects are written before their
row commits and removed after their row's deletion commits (``discard_after_commit``), so
a crash in between leaves an unreferenced object for the sweep, never a row without bytes
(``discard_attachments`` collects the keys of tasks and projects about to be deleted).

Errors from the store (a full or read-only disk, an unreachable or refusing S3 endpoint)
are raised as ``StorageUnavailable`` — a 503 with ``Retry-After`` (API.md §1), never a 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import unquote, urlsplit

import anyio
import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.errors import ServiceUnavailable
from taskmanager.models.attachments import Attachment
from taskmanager.models.tasks import Task

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = structlog.get_logger("taskmanager.storage")

__all__ = [
    "CHUNK_BYTES",
    "S3_PART_BYTES",
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "StorageUnavailable",
    "StoredObject",
    "discard_after_commit",
    "discard_attachments",
    "discard_committed",
    "new_key",
    "open_storage",
]

# Read and write size of one chunk: small enough that memory stays flat per transfer.
CHUNK_BYTES = 64 * 1024
# S3 multipart part size: parts must be at least 5 MiB (all but the last); one part is the
# most an upload holds in memory.
S3_PART_BYTES = 8 * 1024 * 1024
# DeleteObjects takes at most 1,000 keys per call.
_S3_DELETE_BATCH = 1000
_KEY = re.compile(r"[0-9a-f]{32}")
_RETRY_AFTER = {"Retry-After": "5"}


class StorageUnavailable(ServiceUnavailable):
    """The attachment store failed or cannot be reached (→ 503 with ``Retry-After``)."""

    def __init__(self, detail: str = "The attachment store is unavailable; try again shortly"):
        super().__init__(detail, headers=dict(_RETRY_AFTER))


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What ``put`` wrote: the generated key, the size in bytes, the SHA-256 (hex)."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object, for the sweep: its key and when it was last written (UTC)."""

    key: str
    modified_at: datetime


def new_key() -> str:
    """A fresh object key: 128 random bits as 32 hex digits (never derived from the client)."""
    return secrets.token_hex(16)


def _checked_key(key: str) -> str:
    # Keys come from our own rows, but a key that could name a path is never used as one.
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class Storage(Protocol):
    """The store of attachment bytes. Every method raises ``StorageUnavailable`` on failure."""

    url: str

    async def put(self, chunks: AsyncIterable[bytes]) -> StoredObject:
        """Write ``chunks`` under a new key; all or nothing (an exception from ``chunks``
        included: nothing is left behind and the exception propagates)."""
        ...

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """Open the object for reading (failing here, before any byte is sent); iterate the
        result for its bytes in chunks of at most ``CHUNK_BYTES``."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove these objects; keys already gone are not an error."""
        ...

    def objects(self) -> AsyncIterator[ObjectInfo]:
        """Every stored object (for the orphan sweep), in no particular order."""
        ...

    async def abort_stale(self, older_than: datetime) -> int:
        """Remove unfinished writes started before ``older_than``; how many were removed."""
        ...

    async def aclose(self) -> None:
        """Release connections (S3); the store itself is untouched."""
        ...


# ---- local disk ----------------------------------------------------------------------------


class LocalStorage:
    """Objects as files under one directory: ``<root>/<key[:2]>/<key>``.

    A write goes to a hidden temporary file in the same directory, is flushed to disk
    (``fsync``) and only then renamed into place, and the directory is synced too: after a
    crash or a power loss an object is either complete or absent. File work runs in worker
    threads, one chunk at a time.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        key = _checked_key(key)
        return self.root / key[:2] / key

    async def put(self, chunks: AsyncIterable[bytes]) -> StoredObject:
        key = new_key()
        final = self._path(key)
        digest = hashlib.sha256()
        size = 0
        try:
            await anyio.to_thread.run_sync(lambda: final.parent.mkdir(parents=True, exist_ok=True))
            fd, temp_name = await anyio.to_thread.run_sync(
                lambda: tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=final.parent)
            )
        except OSError as exc:
            raise _local_failure("put", exc) from exc
        temp = Path(temp_name)
        finished = False
        try:
            with os.fdopen(fd, "wb") as file:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    await anyio.to_thread.run_sync(file.write, chunk)
                await anyio.to_thread.run_sync(_flush_and_sync, file)
            await anyio.to_thread.run_sync(_publish, temp, final)
            finished = True
        except OSError as exc:
            raise _local_failure("put", exc) from exc
        finally:
            if not finished:
                with contextlib.suppress(OSError):
                    await anyio.to_thread.run_sync(temp.unlink)
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            file = await anyio.open_file(path, "rb")
        except OSError as exc:
            raise _local_failure("open", exc) from exc
        return _read_file(file)

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(key) for key in keys]

        def remove() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        try:
            await anyio.to_thread.run_sync(remove)
        except OSError as exc:
            raise _local_failure("delete", exc) from exc

    async def objects(self) -> AsyncIterator[ObjectInfo]:
        try:
            found = await anyio.to_thread.run_sync(self._scan, False)
        except OSError as exc:
            raise _local_failure("list", exc) from exc
        for path, modified in found:
            yield ObjectInfo(key=path.name, modified_at=modified)

    async def abort_stale(self, older_than: datetime) -> int:
        try:
            found = await anyio.to_thread.run_sync(self._scan, True)
            stale = [path for path, modified in found if modified < older_than]
            for path in stale:
                await anyio.to_thread.run_sync(_unlink, path)
        except OSError as exc:
            raise _local_failure("abort_stale", exc) from exc
        return len(stale)

    def _scan(self, temporary: bool) -> list[tuple[Path, datetime]]:
        """Objects (or, with ``temporary``, unfinished writes) and their modification times."""
        found: list[tuple[Path, datetime]] = []
        if not self.root.is_dir():
            return found
        for shard in self.root.iterdir():
            if not shard.is_dir():
                continue
            for entry in shard.iterdir():
                wanted = entry.name.endswith(".part") if temporary else _KEY.fullmatch(entry.name)
                if wanted and entry.is_file():
                    stat = entry.stat()
                    found.append((entry, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return found

    async def aclose(self) -> None:
        return None


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _flush_and_sync(file: Any) -> None:
    file.flush()
    os.fsync(file.fileno())


def _publish(temp: Path, final: Path) -> None:
    """Rename into place, then sync the directory so the new name survives a power loss."""
    os.replace(temp, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def _read_file(file: anyio.AsyncFile[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await file.read(CHUNK_BYTES):
            yield chunk
    finally:
        await file.aclose()


def _local_failure(operation: str, exc: OSError) -> StorageUnavailable:
    log.warning("storage_failed", backend="file", operation=operation, error=f"{exc}"[:200])
    return StorageUnavailable()


# ---- S3 ------------------------------------------------------------------------------------


class S3Storage:
    """Objects in an S3 bucket under a prefix: ``<prefix>/<key>``, through aiobotocore.

    Uploads stream: a body smaller than one part is one ``PutObject``; a larger one is a
    multipart upload of ``S3_PART_BYTES`` parts, sent as each part fills, and aborted if
    anything fails (so no parts are left billed). Downloads stream the object's body.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str, url: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = url
        self._exit: AsyncExitStack | None = None

    def _object(self, key: str) -> str:
        return self.prefix + _checked_key(key)

    async def put(self, chunks: AsyncIterable[bytes]) -> StoredObject:
        key = new_key()
        name = self._object(key)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if len(buffer) >= S3_PART_BYTES:
                    if upload_id is None:
                        created = await self.client.create_multipart_upload(
                            Bucket=self.bucket, Key=name
                        )
                        upload_id = created["UploadId"]
                    part = bytes(buffer[:S3_PART_BYTES])
                    del buffer[:S3_PART_BYTES]
                    parts.append(await self._upload_part(name, upload_id, len(parts) + 1, part))
            if upload_id is None:
                await self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(buffer))
            else:
                if buffer:
                    last = bytes(buffer)
                    buffer.clear()
                    parts.append(await self._upload_part(name, upload_id, len(parts) + 1, last))
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": cast(Any, parts)},
                )
                upload_id = None
        except BaseException as exc:
            if upload_id is not None:
                await self._abort(name, upload_id)
            if _is_s3_failure(exc):
                raise _s3_failure("put", exc) from exc
            raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    async def _upload_part(
        self, name: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        answer = await self.client.upload_part(
            Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _abort(self, name: str, upload_id: str) -> None:
        # Shielded: a cancelled request (client gone, time budget) must still abort.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id
            )

    async def open(self, key: str) -> AsyncIterator[bytes]:
        try:
            answer = await self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except Exception as exc:
            if _is_s3_failure(exc):
                raise _s3_failure("open", exc) from exc
            raise
        return self._read_body(answer["Body"])

    async def _read_body(self, body: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await body.read(CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def delete(self, keys: Sequence[str]) -> None:
        names = [self._object(key) for key in keys]
        try:
            for start in range(0, len(names), _S3_DELETE_BATCH):
                batch = names[start : start + _S3_DELETE_BATCH]
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
                )
        except Exception as exc:
            if _is_s3_failure(exc):
                raise _s3_failure("delete", exc) from exc
            raise

    async def objects(self) -> AsyncIterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    name = item.get("Key", "")[len(self.prefix) :]
                    if _KEY.fullmatch(name) and "LastModified" in item:
                        yield ObjectInfo(key=name, modified_at=item["LastModified"])
        except Exception as exc:
            if _is_s3_failure(exc):
                raise _s3_failure("list", exc) from exc
            raise

    async def abort_stale(self, older_than: datetime) -> int:
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    started = upload.get("Initiated")
                    if started is not None and started < older_than:
                        await self._abort(upload["Key"], upload["UploadId"])
                        aborted += 1
        except Exception as exc:
            if _is_s3_failure(exc):
                raise _s3_failure("abort_stale", exc) from exc
            raise
        return aborted

    async def aclose(self) -> None:
        if self._exit is not None:
            await self._exit.aclose()
            self._exit = None


def _is_s3_failure(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | OSError)


def _s3_failure(operation: str, exc: BaseException) -> StorageUnavailable:
    log.warning("storage_failed", backend="s3", operation=operation, error=f"{exc}"[:200])
    return StorageUnavailable()


async def _s3_storage(url: str) -> S3Storage:
    from aiobotocore.session import get_session
    from botocore.config import Config

    parts = urlsplit(url)
    bucket = parts.netloc
    prefix = unquote(parts.path)
    custom_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 2, "mode": "standard"},
        # S3-compatible stores (MinIO, Ceph, moto) are usually addressed by path.
        s3={"addressing_style": "path" if custom_endpoint else "auto"},
        # Checksums only where the API requires them: several S3-compatible stores refuse
        # the newer default trailing checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    exit_stack = AsyncExitStack()
    # Endpoint, region and credentials: botocore reads AWS_ENDPOINT_URL(_S3), AWS_REGION /
    # AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles and roles.
    client = await exit_stack.enter_async_context(get_session().create_client("s3", config=config))
    storage = S3Storage(cast("S3Client", client), bucket, prefix, url)
    storage._exit = exit_stack
    return storage


async def open_storage(url: str) -> Storage:
    """The backend for ``url`` (``file:///dir`` or ``s3://bucket/prefix``), ready to use."""
    if url.startswith("s3://"):
        return await _s3_storage(url)
    root = Path(unquote(urlsplit(url).path))
    return LocalStorage(root)


# ---- removing objects after a commit -------------------------------------------------------

_DISCARD = "taskmanager.storage.discard"


def discard_after_commit(session: AsyncSession, keys: Sequence[str]) -> None:
    """Remove these objects once this session's transaction commits (never if it rolls back).

    The request's session dependency (``kit.deps.get_session``) removes them right after
    its commit (``discard_committed``). A crash in between leaves unreferenced objects,
    which the orphan sweep removes.
    """
    if keys:
        session.info.setdefault(_DISCARD, []).extend(keys)


async def discard_attachments(
    session: AsyncSession, *, task_ids: Sequence[int] = (), project_ids: Sequence[int] = ()
) -> None:
    """Before deleting tasks or projects: their attachments' objects go after the commit.

    Call it in the transaction that deletes them, before the delete (the rows go with the
    foreign-key cascade, and with them the keys).
    """
    conditions = []
    if task_ids:
        conditions.append(Attachment.task_id.in_(task_ids))
    if project_ids:
        conditions.append(
            Attachment.task_id.in_(select(Task.id).where(Task.project_id.in_(project_ids)))
        )
    if not conditions:
        return
    keys = (await session.scalars(select(Attachment.storage_key).where(or_(*conditions)))).all()
    discard_after_commit(session, list(keys))


async def discard_committed(session: AsyncSession, storage: Storage) -> None:
    """Remove the objects ``discard_after_commit`` named; call it after the commit.

    Failures are logged, not raised: the change is committed and the sweep removes what
    is left.
    """
    await discard_now(storage, session.info.pop(_DISCARD, []))


async def discard_now(storage: Storage, keys: Sequence[str]) -> None:
    """Remove objects whose rows a committed transaction deleted (``discard_committed``,
    and the writes made on the driver, ``kit.driver``, which have no session).

    Failures are logged, not raised: the change is committed and the sweep removes what
    is left.
    """
    if not keys:
        return
    try:
        await storage.delete(list(keys))
    except Exception as exc:
        log.warning("storage_discard_failed", count=len(keys), error=f"{exc}"[:200])
