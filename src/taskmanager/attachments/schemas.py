"""Response bodies for attachments (uploads are multipart, described in the router)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from taskmanager.kit.pagination import Page


class AttachmentOut(BaseModel):
    """A file attached to a task: its metadata (the bytes are at ``.../content``)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 4,
                    "task_id": 17,
                    "filename": "invoice.pdf",
                    "content_type": "application/pdf",
                    "size": 48213,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "created_at": "2026-12-01T17:00:00Z",
                }
            ]
        },
    )

    id: int
    task_id: int
    filename: str = Field(description="The uploaded file's name (last path segment only)")
    content_type: str = Field(description="The recorded media type, served with the download")
    size: int = Field(description="Bytes")
    sha256: str = Field(description="SHA-256 of the content, hex; the download's ETag")
    created_at: datetime


class AttachmentPage(Page[AttachmentOut]):
    pass
