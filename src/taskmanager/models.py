"""Every ORM model, imported in one place so Alembic and tests see the whole schema."""

from taskmanager.api_keys.models import ApiKey
from taskmanager.auth.models import RefreshToken
from taskmanager.comments.models import Comment
from taskmanager.db import Base
from taskmanager.idempotency.models import IdempotencyRecord
from taskmanager.projects.models import Project, ProjectMember
from taskmanager.tasks.models import Task
from taskmanager.users.models import User

__all__ = [
    "ApiKey",
    "Base",
    "Comment",
    "IdempotencyRecord",
    "Project",
    "ProjectMember",
    "RefreshToken",
    "Task",
    "User",
]
