"""``/tasks/{id}/attachments``: upload (streamed), list, metadata, download, delete."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request, Response
from starlette.responses import StreamingResponse

from taskmanager.attachments import naming, service
from taskmanager.attachments.schemas import AttachmentOut, AttachmentPage
from taskmanager.attachments.upload import FIELD, MULTIPART, MultipartUpload
from taskmanager.kit import authn
from taskmanager.kit.deps import (
    CurrentPrincipal,
    DatabaseDep,
    ListingDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    require_scope,
    scope_dependencies,
)
from taskmanager.kit.errors import (
    Forbidden,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from taskmanager.kit.http import (
    NOT_MODIFIED,
    IfMatch,
    IfNoneMatch,
    TaskId,
    created_responses,
    domain_router,
    id_path,
    list_responses,
    location,
    not_modified,
)
from taskmanager.kit.identity import Principal, Scope
from taskmanager.kit.problems import problem_responses

router = domain_router("attachments")

AttachmentId = Annotated[int, id_path("attachment")]

READ, WRITE = scope_dependencies(Scope.TASKS_READ, Scope.TASKS_WRITE)
_AUTH_ERRORS = (NotAuthenticated, Forbidden, NotFound, ValidationFailed)


async def _uploader(request: Request) -> Principal:
    """The caller of an upload, verified in a snapshot with ``tasks:write``.

    Not through the request's session: the upload streams before its row is written, and
    a session used now would hold its transaction (on SQLite: the one writer) open for as
    long as the client takes to send the file.
    """
    principal = await authn.authenticate(request.scope)
    require_scope(principal, Scope.TASKS_WRITE)
    return principal


Uploader = Annotated[Principal, Depends(_uploader)]

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "The file; its name and Content-Type are recorded",
                        }
                    },
                }
            }
        },
    }
}
_DOWNLOAD_HEADERS: dict[str, Any] = {
    "Content-Disposition": {
        "description": "`attachment; filename=\"...\"; filename*=UTF-8''...` (RFC 6266, 8187)",
        "schema": {"type": "string"},
    },
    "ETag": {"description": "The content's SHA-256, quoted", "schema": {"type": "string"}},
    "Content-Length": {"description": "Bytes", "schema": {"type": "integer"}},
}


@router.get(
    "/tasks/{task_id}/attachments",
    summary="List a task's attachments",
    dependencies=READ,
    responses=list_responses(*_AUTH_ERRORS),
)
async def list_(
    task_id: TaskId, session: SessionDep, principal: CurrentPrincipal, listing: ListingDep
) -> AttachmentPage:
    """The task's attachments (metadata), oldest first; any member may read."""
    result = await service.ATTACHMENTS.page(
        session, principal, task_id, listing.page, key=listing.signing_key
    )
    return listing.page_of(AttachmentPage, result, AttachmentOut.model_validate)


@router.post(
    "/tasks/{task_id}/attachments",
    status_code=201,
    summary="Attach a file to a task",
    openapi_extra=_UPLOAD_BODY,
    responses=created_responses(
        *_AUTH_ERRORS, MalformedRequest, PayloadTooLarge, UnsupportedMediaType, ServiceUnavailable
    ),
)
async def create(
    task_id: TaskId,
    request: Request,
    response: Response,
    session: SessionDep,
    database: DatabaseDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: Uploader,
) -> AttachmentOut:
    """Upload the multipart field `file` (streamed; over `TASKMANAGER_MAX_UPLOAD_BYTES` → 413);
    editors and owners. Stored under a generated key, never the client's name or path."""
    async with database.snapshot() as snapshot:
        await service.check_may_upload(snapshot, principal, task_id)
    upload = MultipartUpload(request, limit=settings.max_upload_bytes)
    filename, content_type = await upload.file_part()
    stored = await storage.put(upload.data())
    try:
        await upload.finish()
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await storage.delete([stored.key])
        raise
    attachment = await service.create_attachment(
        session,
        storage,
        principal,
        task_id,
        stored=stored,
        filename=naming.display_filename(filename),
        content_type=naming.media_type(content_type),
    )
    response.headers["Location"] = location("tasks", task_id, "attachments", attachment.id)
    return AttachmentOut.model_validate(attachment)


@router.get(
    "/tasks/{task_id}/attachments/{attachment_id}",
    summary="Get an attachment's metadata",
    dependencies=READ,
    responses=problem_responses(*_AUTH_ERRORS),
)
async def get(
    task_id: TaskId,
    attachment_id: AttachmentId,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
) -> AttachmentOut:
    """One attachment's metadata, with the ETag ``"<id>-1"`` (attachments never change);
    any member may read."""
    attachment = await service.ATTACHMENTS.get(session, principal, task_id, attachment_id)
    response.headers["ETag"] = service.metadata_etag(attachment)
    return AttachmentOut.model_validate(attachment)


@router.get(
    "/tasks/{task_id}/attachments/{attachment_id}/content",
    summary="Download an attachment",
    dependencies=READ,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file, as `Content-Disposition: attachment`, with the content "
            "type recorded at upload (`application/octet-stream` when none was given)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "headers": _DOWNLOAD_HEADERS,
        },
        **NOT_MODIFIED,
        **problem_responses(*_AUTH_ERRORS, ServiceUnavailable),
    },
)
async def content(
    task_id: TaskId,
    attachment_id: AttachmentId,
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    storage: StorageDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The file's bytes, streamed, with its recorded content type, always as an attachment
    (never rendered inline: `nosniff`); `If-None-Match` with its ETag → 304."""
    attachment = await service.ATTACHMENTS.get(session, principal, task_id, attachment_id)
    etag = service.content_etag(attachment)
    cached = not_modified(if_none_match, etag)
    if cached is not None:
        return cached
    headers = {
        "Content-Type": attachment.content_type,
        "Content-Length": str(attachment.size),
        "Content-Disposition": naming.content_disposition(attachment.filename),
        "ETag": etag,
        # X-Content-Type-Options: nosniff is on every response (middleware.context).
    }
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    # Opened here, so a store that fails answers 503 before any byte is sent.
    chunks = await storage.open(attachment.storage_key)
    return StreamingResponse(chunks, headers=headers)


@router.delete(
    "/tasks/{task_id}/attachments/{attachment_id}",
    status_code=204,
    summary="Delete an attachment",
    dependencies=WRITE,
    responses=problem_responses(*_AUTH_ERRORS, PreconditionFailed),
)
async def delete(
    task_id: TaskId,
    attachment_id: AttachmentId,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Delete an attachment and its file; editors and owners. ``If-Match`` may name either
    of its ETags (metadata ``"<id>-1"`` or the content's SHA-256); another → 412."""
    await service.delete_attachment(session, principal, task_id, attachment_id, if_match=if_match)
    return Response(status_code=204)
