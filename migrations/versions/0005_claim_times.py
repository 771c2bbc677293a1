"""pocoflow 0.3: a queue's rate limit counts every start, resumed runs too.

``claimed_at`` is when a worker last took a run up: a first start, or a run
going on after ``db.resume``, a dead worker or a hand-back. A queue's rate
limit (``--rate``) counts the runs claimed within its period, so a resumed
run is held back by it and counted in it, as a first start is (it counted
``started_at``, which a resumed run keeps from its first start). Runs that
workers took up before this revision count from their ``started_at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pf_runs") as batch:
        batch.add_column(sa.Column("claimed_at", sa.Text()))
    runs = sa.table("pf_runs", sa.column("queue"), sa.column("status"),
                    sa.column("started_at"), sa.column("claimed_at"))
    op.execute(runs.update()
               .where(runs.c.queue.is_not(None), runs.c.status != "queued")
               .values(claimed_at=runs.c.started_at))
    op.drop_index("ix_pf_runs_queue_started", table_name="pf_runs")
    op.create_index("ix_pf_runs_queue_claimed", "pf_runs", ["queue", "claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_pf_runs_queue_claimed", table_name="pf_runs")
    op.create_index("ix_pf_runs_queue_started", "pf_runs", ["queue", "started_at"])
    with op.batch_alter_table("pf_runs") as batch:
        batch.drop_column("claimed_at")
