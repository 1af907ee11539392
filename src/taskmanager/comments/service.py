"""Comment rules: who may read, write, reword and delete. Raises domain errors only."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.comments import repository
from taskmanager.comments.schemas import CommentOut
from taskmanager.kit.errors import Forbidden, PreconditionFailed
from taskmanager.kit.etags import stale
from taskmanager.kit.identity import Principal
from taskmanager.kit.outbox import EventType, event_step, record, record_steps
from taskmanager.models.comments import Comment
from taskmanager.projects.access import Access, task_access
from taskmanager.projects.children import TaskChildren
from taskmanager.projects.policy import Permission, role_allows

# A task's comments: listed oldest first, read by any member.
COMMENTS = TaskChildren(
    "Comment", b"taskmanager/comments/cursor/v1", repository.list_for_task, repository.get_on_task
)


async def _record(
    session: AsyncSession,
    type: EventType,
    project_id: int,
    principal: Principal,
    comment: Comment,
    changed: list[str] | None = None,
) -> None:
    data: dict[str, Any] = CommentOut.model_validate(comment).model_dump(mode="json")
    await record(
        session,
        type=type,
        project_id=project_id,
        actor_id=principal.user_id,
        data=data,
        changed=changed,
    )


def _may_edit(principal: Principal, access: Access) -> bool:
    return principal.is_admin or role_allows(access.role, Permission.EDIT_TASKS)


async def create_comment(
    session: AsyncSession, principal: Principal, task_id: int, *, body: str
) -> Comment:
    access = await task_access(session, principal, task_id, Permission.EDIT_TASKS)
    comment = await repository.insert(
        session, task_id=task_id, author_id=principal.user_id, body=body
    )
    await _record(session, EventType.COMMENT_CREATED, access.project_id, principal, comment)
    return comment


async def _lost(session: AsyncSession, task_id: int, comment_id: int) -> PreconditionFailed:
    """Why a compare-and-set matched no row: NotFound (raised) if the comment is gone, else
    the 412. Runs only on that failure path."""
    await COMMENTS.one(session, task_id, comment_id)
    return stale("comment")


async def edit_comment(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    comment_id: int,
    *,
    body: str,
    expected_versions: Collection[int] | None = None,
) -> Comment:
    """Only the author may reword a comment, and only while they may still edit in the project.

    Admins are not exempt: rewriting someone else's words would put them in that person's mouth.
    ``expected_versions``: what ``If-Match`` accepts (None: anything); else PreconditionFailed.
    """
    access = await task_access(session, principal, task_id, Permission.VIEW)
    comment = await COMMENTS.one(session, task_id, comment_id)
    if comment.author_id != principal.user_id:
        raise Forbidden("Only the author may edit a comment")
    if not _may_edit(principal, access):
        raise Forbidden(f"Your role '{access.role}' does not allow this action")
    changed = ["body"] if comment.body != body else []
    edited = await repository.set_body(
        session, comment.id, body, expected_versions=expected_versions
    )
    if edited is None:
        raise await _lost(session, task_id, comment_id)
    await _record(session, EventType.COMMENT_UPDATED, access.project_id, principal, edited, changed)
    return edited


async def delete_comment(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    comment_id: int,
    *,
    expected_versions: Collection[int] | None = None,
) -> None:
    """The author (while they may edit), a project owner or an admin may delete a comment;
    only at one of ``expected_versions`` (``If-Match``), else PreconditionFailed."""
    access = await task_access(session, principal, task_id, Permission.VIEW)
    comment = await COMMENTS.one(session, task_id, comment_id)
    manager = principal.is_admin or role_allows(access.role, Permission.MANAGE)
    author = comment.author_id == principal.user_id and _may_edit(principal, access)
    if not (manager or author):
        raise Forbidden("Only the author or a project owner may delete a comment")
    await _record(session, EventType.COMMENT_DELETED, access.project_id, principal, comment)
    if not await repository.delete_comment(
        session, comment.id, expected_versions=expected_versions
    ):
        raise await _lost(session, task_id, comment_id)


async def forget_author(session: AsyncSession, user_id: int) -> None:
    """Before ``user_id``'s account is deleted: its comments keep their text but lose their
    author, each with a new version and a ``comment.updated`` naming ``author_id``."""
    changed = await repository.forget_author(session, user_id)
    await record_steps(
        session,
        (
            event_step(
                type=EventType.COMMENT_UPDATED,
                project_id=project_id,
                actor_id=user_id,
                data=CommentOut.model_validate(comment).model_dump(mode="json"),
                changed=["author_id"],
            )
            for comment, project_id in changed
        ),
    )
