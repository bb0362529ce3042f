"""jobs.model_deleted_at (when the job's registered model was deleted) and an index on jobs.model_id

A deleted model's id is then answered with 410 Gone (and when it went) instead of 404, and a job
says that the model it registered no longer exists.

Revision ID: 20261129_0002
Revises: 20261127_0001
Create Date: 2026-11-29
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261129_0002"
down_revision = "20261127_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(op.f("ix_jobs_model_id"), ["model_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_model_id"))
        batch.drop_column("model_deleted_at")
