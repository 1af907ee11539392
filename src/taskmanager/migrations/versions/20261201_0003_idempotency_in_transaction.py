"""Idempotency records commit with the change they guard; no credential is ever kept.

Data only (the table is unchanged): removes the claims the old two-step protocol left
behind (rows without an answer) and every stored answer of a route that hands out
credentials (logins, refreshes, new API keys), so no token or key stays at rest.

Revision ID: 0003_idempotency_in_tx
Revises: 0002_security
Create Date: 2026-11-30 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_idempotency_in_tx"
down_revision: str | None = "0002_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CREDENTIAL_ROUTES = (
    "POST /api/v1/auth/token",
    "POST /api/v1/auth/refresh",
    "POST /api/v1/api-keys",
)


def upgrade() -> None:
    records = sa.table(
        "idempotency_records",
        sa.column("status_code", sa.Integer()),
        sa.column("route", sa.String()),
    )
    op.execute(
        records.delete().where(
            records.c.status_code.is_(None) | records.c.route.in_(_CREDENTIAL_ROUTES)
        )
    )


def downgrade() -> None:
    # Deleted records cannot come back; the old code reads the remaining ones as they are.
    pass
