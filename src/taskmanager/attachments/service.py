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
from taskmanager.kit.errors import NotFound
from taskmanager.kit.identity import Principal
from taskmanager.kit.outbox import EventType, record
from taskmanager.kit.pagination import KeysetList, ListPage, PageRequest
from taskmanager.kit.storage import Storage, StoredObject, discard_after_commit
from taskmanager.models.attachments import Attachment
from taskmanager.projects.access import task_access
from taskmanager.projects.policy import Permission

_LIST: KeysetList[Attachment] = KeysetList(
    b"taskmanager/attachments/cursor/v1",
    row_id=lambda attachment: attachment.id,
    sorted_by=lambda attachment: attachment.created_at,
)


async def _attachment(session: AsyncSession, task_id: int, attachment_id: int) -> Attachment:
    attachment = await repository.get_on_task(session, task_id, attachment_id)
    if attachment is None:
        raise NotFound(f"Attachment {attachment_id} not found on task {task_id}")
    return attachment


async def list_attachments(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    page: PageRequest,
    *,
    signing_key: str,
) -> ListPage[Attachment]:
    """A page of the task's attachments, oldest first; any member may read."""
    await task_access(session, principal, task_id, Permission.VIEW)
    return await _LIST.page(
        page,
        lambda window: repository.list_for_task(session, task_id, window),
        key=signing_key,
        scope={"task_id": task_id},
    )


async def get_attachment(
    session: AsyncSession, principal: Principal, task_id: int, attachment_id: int
) -> Attachment:
    """One attachment of the task (its metadata); any member may read. NotFound otherwise."""
    await task_access(session, principal, task_id, Permission.VIEW)
    return await _attachment(session, task_id, attachment_id)


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
    session: AsyncSession, principal: Principal, task_id: int, attachment_id: int
) -> None:
    """Delete an attachment (editors and owners) with an ``attachment.deleted`` event; its
    object is removed once the deletion commits."""
    access = await task_access(session, principal, task_id, Permission.EDIT_TASKS)
    attachment = await _attachment(session, task_id, attachment_id)
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
