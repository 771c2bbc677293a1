"""pocoflow 0.3: queued runs for workers, human-in-the-loop across processes, forks.

A run submitted with ``flow.submit`` is a ``queued`` row naming its ``queue``,
``priority`` and earliest start (``not_before``); workers claim the oldest of
the highest priority (a partial index holds exactly the queued rows, in that
order). ``dedup_key`` is unique among queued and running runs (a partial
unique index: a second submit with the key finds the first). ``attempts``
counts the workers that took the run up, so one that keeps killing its worker
is failed, not retried forever. ``resume_updates`` carries a human's answer
(``db.resume(run_id, updates=...)``) to the worker that goes on with a paused
run. ``forked_from``/``forked_at_step`` record where a forked run came from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("queue", sa.Text()),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("dedup_key", sa.Text()),
        sa.Column("not_before", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("resume_updates", sa.Text()),
        sa.Column("forked_from", sa.Text()),
        sa.Column("forked_at_step", sa.Integer()),
    ]
QUEUED = sa.text("status = 'queued'")
IN_FLIGHT = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("pf_runs") as batch:
        for column in _columns():
            batch.add_column(column)
    op.create_index("ix_pf_runs_queued", "pf_runs",
                    ["queue", sa.text("priority DESC"), "started_at"],
                    sqlite_where=QUEUED, postgresql_where=QUEUED)
    op.create_index("ix_pf_runs_dedup", "pf_runs", ["dedup_key"], unique=True,
                    sqlite_where=IN_FLIGHT, postgresql_where=IN_FLIGHT)
    op.create_index("ix_pf_runs_queue_started", "pf_runs", ["queue", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_pf_runs_queue_started", table_name="pf_runs")
    op.drop_index("ix_pf_runs_dedup", table_name="pf_runs")
    op.drop_index("ix_pf_runs_queued", table_name="pf_runs")
    with op.batch_alter_table("pf_runs") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
