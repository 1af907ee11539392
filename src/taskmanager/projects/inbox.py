"""Every user's personal Inbox project."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.models.projects import Project, ProjectMember

INBOX_NAME = "Inbox"


async def create_inbox(session: AsyncSession, user_id: int) -> Project:
    """Create the user's Inbox, owned by them, in the caller's transaction."""
    inbox = Project(name=INBOX_NAME, is_inbox=True, created_by=user_id)
    session.add(inbox)
    await session.flush()
    session.add(ProjectMember(project_id=inbox.id, user_id=user_id, role="owner"))
    await session.flush()
    return inbox


async def inbox_id_of(session: AsyncSession, user_id: int) -> int | None:
    return (
        await session.execute(
            select(Project.id)
            .join(ProjectMember, ProjectMember.project_id == Project.id)
            .where(
                Project.is_inbox.is_(True),
                Project.created_by == user_id,
                ProjectMember.user_id == user_id,
            )
            .order_by(Project.id)
            .limit(1)
        )
    ).scalar_one_or_none()
