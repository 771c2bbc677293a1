"""pocoflow 0.2 schema: pf_runs, pf_checkpoints, pf_events, exactly as 0.2 made them.

A database written by pocoflow 0.2 already has these tables and no
``alembic_version``; PocoFlow stamps it at this revision. Run by hand with
``alembic upgrade head`` on such a file, this revision adopts the existing
tables instead of failing.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("pf_runs"):
        return  # a pocoflow 0.2 database: its tables are this revision
    op.create_table(
        "pf_runs",
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("flow_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.Text(), nullable=False, server_default="running"),
        sa.Column("started_at", sa.Text(), nullable=False),
        sa.Column("completed_at", sa.Text()),
        sa.Column("total_steps", sa.Integer()),
        sa.Column("current_node", sa.Text()),
        sa.Column("error_msg", sa.Text()),
        sa.CheckConstraint("status IN ('queued','running','paused','completed','failed')",
                           name="pf_runs_status_check"),
    )
    op.create_table(
        "pf_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Text(), sa.ForeignKey("pf_runs.run_id"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.Text(), nullable=False),
        sa.Column("store_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", "step"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "pf_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Text(), sa.ForeignKey("pf_runs.run_id"), nullable=False),
        sa.Column("step", sa.Integer()),
        sa.Column("node_name", sa.Text()),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("action", sa.Text()),
        sa.Column("elapsed_ms", sa.Float().with_variant(sa.REAL(), "sqlite")),
        sa.Column("error_msg", sa.Text()),
        sa.Column("ts", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("pf_events")
    op.drop_table("pf_checkpoints")
    op.drop_table("pf_runs")
