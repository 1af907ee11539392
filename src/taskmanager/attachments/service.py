"""Attachment rules: who may list, read, upload and delete. Raises domain errors only.

An upload is streamed to the object store *before* its row is written (the request's
transaction is not held open, nor SQLite's one writer, while a client sends megabytes):
``check_may_upload`` runs in a snapshot first, the bytes go to the store, then
``create_attachment`` checks access again in the request's transaction (the task may have
gone or the caller lost the role meanwhile), writes the row and its event. Until that
commits the object is unreferenced, so a crash leaves an orphan the sweep removes, never a
row without bytes.
"""

from __future__ import annotations

import contextlib

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.attachments import repository
from taskmanager.attachments.schemas import AttachmentOut
from taskmanager.kit.etags import stale, strong_etag, strong_match
from taskmanager.kit.identity import Principal
from taskmanager.kit.outbox import EventType, record
from taskmanager.kit.storage import Storage, StoredObject, discard_after_commit
from taskmanager.models.attachments import Attachment
from taskmanager.projects.access import task_access
from taskmanager.projects.children import TaskChildren
from taskmanager.projects.policy import Permission


def metadata_etag(attachment: Attachment) -> str:
    """The metadata's ETag ``"<id>-1"``: an attachment never changes after upload, so it
    has one version and needs no version column."""
    return strong_etag(attachment.id, 1)


def content_etag(attachment: Attachment) -> str:
    """The content's ETag: the quoted SHA-256 of the bytes (API.md §5)."""
    return f'"{attachment.sha256}"'


# A task's attachments (metadata): listed oldest first, read by any member.
ATTACHMENTS = TaskChildren(
    "Attachment",
    b"taskmanager/attachments/cursor/v1",
    repository.list_for_task,
    repository.get_on_task,
)


async def check_may_upload(session: AsyncSession, principal: Principal, task_id: int) -> None:
    """Before any byte is read: editors and owners may upload (NotFound, Forbidden)."""
    await task_access(session, principal, task_id, Permission.EDIT_TASKS)


async def create_attachment(
    session: AsyncSession,
    storage: Storage,
    principal: Principal,
    task_id: int,
    *,
    stored: StoredObject,
    filename: str,
    content_type: str,
) -> Attachment:
    """Record the stored object as the task's attachment, with an ``attachment.created`` event.

    Access is checked again here, in the request's transaction. If that fails the object is
    removed at once (and the error raised); if the commit later fails, the sweep removes it.
    """
    try:
        access = await task_access(session, principal, task_id, Permission.EDIT_TASKS)
        attachment = await repository.insert(
            session, task_id=task_id, filename=filename, content_type=content_type, stored=stored
        )
        await record(
            session,
            type=EventType.ATTACHMENT_CREATED,
            project_id=access.project_id,
            actor_id=principal.user_id,
            data=AttachmentOut.model_validate(attachment).model_dump(mode="json"),
        )
    except BaseException:
        # Shielded and best effort: a cancelled or failing request still tidies up, and a
        # store that fails now leaves the object to the sweep rather than hide the error.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await storage.delete([stored.key])
        raise
    return attachment


async def delete_attachment(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    attachment_id: int,
    *,
    if_match: str | None = None,
) -> None:
    """Delete an attachment (editors and owners) with an ``attachment.deleted`` event; its
    object is removed once the deletion commits.

    ``if_match``: the request's ``If-Match``; either ETag the attachment is served with
    (metadata ``"<id>-1"`` or content SHA-256) matches, since both name the one immutable
    version; anything else raises PreconditionFailed. Compared on the row just read: an
    attachment never changes, so the comparison cannot go stale before the DELETE.
    """
    access = await task_access(session, principal, task_id, Permission.EDIT_TASKS)
    attachment = await ATTACHMENTS.one(session, task_id, attachment_id)
    if not strong_match(if_match, metadata_etag(attachment), content_etag(attachment)):
        raise stale("attachment")
    data = AttachmentOut.model_validate(attachment).model_dump(mode="json")
    await repository.delete_attachment(session, attachment.id)
    await record(
        session,
        type=EventType.ATTACHMENT_DELETED,
        project_id=access.project_id,
        actor_id=principal.user_id,
        data=data,
    )
    discard_after_commit(session, [attachment.storage_key])
