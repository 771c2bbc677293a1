"""pocoflow 0.3: cross-process cancel requests, and an index in the runs listing's order.

``cancel_requested_at`` is set by whoever asks a run to stop (the monitor, the
CLI, a RunHandle in another process); the process that owns the run sees it
and cancels the run there. The listing of top-level runs, newest first, reads
``(parent_run_id, started_at, run_id)`` in index order instead of sorting
every row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LISTING_INDEX = "ix_pf_runs_parent_run_id_started_at"


def upgrade() -> None:
    with op.batch_alter_table("pf_runs") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.Text()))
    op.drop_index("ix_pf_runs_parent_run_id", table_name="pf_runs")
    op.create_index(LISTING_INDEX, "pf_runs", ["parent_run_id", "started_at", "run_id"])


def downgrade() -> None:
    op.drop_index(LISTING_INDEX, table_name="pf_runs")
    op.create_index("ix_pf_runs_parent_run_id", "pf_runs", ["parent_run_id"])
    with op.batch_alter_table("pf_runs") as batch:
        batch.drop_column("cancel_requested_at")
