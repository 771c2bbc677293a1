"""pocoflow 0.3: cancelled status, resume point, ownership, run inputs and graph, delta
checkpoints, indexes.

SQLite cannot alter a CHECK constraint, so pf_runs is rebuilt in batch mode
(``copy_from`` gives the 0.2 table, whose CHECK has no name there). The
downgrade turns the new data back into what 0.2 understands: delta
checkpoints become full snapshots, and ``cancelled`` runs become ``failed``
with ``error_msg = 'cancelled'``, which is how 0.2 recorded a cancel.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_CHECK = "status IN ('queued','running','paused','completed','failed')"
NEW_CHECK = "status IN ('queued','running','paused','completed','failed','cancelled')"
CHECK_NAME = "pf_runs_status_check"
RUN_COLUMNS = ("next_node", "parent_run_id", "owner", "heartbeat_at")
RUN_INDEXES = {
    "ix_pf_runs_started_at": ["started_at"],
    "ix_pf_runs_status_started_at": ["status", "started_at"],
    "ix_pf_runs_flow_name_started_at": ["flow_name", "started_at"],
    "ix_pf_runs_parent_run_id": ["parent_run_id"],
}


def _runs_table(check: str) -> sa.Table:
    """pf_runs as revision 0001 has it, with its CHECK named so batch mode can drop it."""
    return sa.Table(
        "pf_runs", sa.MetaData(),
        sa.Column("run_id", sa.Text(), primary_key=True),
        sa.Column("flow_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.Text(), nullable=False, server_default="running"),
        sa.Column("started_at", sa.Text(), nullable=False),
        sa.Column("completed_at", sa.Text()),
        sa.Column("total_steps", sa.Integer()),
        sa.Column("current_node", sa.Text()),
        sa.Column("error_msg", sa.Text()),
        *[sa.Column(name, sa.Text()) for name in (RUN_COLUMNS if check == NEW_CHECK else ())],
        sa.CheckConstraint(check, name=CHECK_NAME),
    )


def _checkpoints_table() -> sa.Table:
    """pf_checkpoints as revision 0001 has it."""
    return sa.Table(
        "pf_checkpoints", sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Text(), sa.ForeignKey("pf_runs.run_id"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.Text(), nullable=False),
        sa.Column("store_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", "step"),
    )


def _events_table() -> sa.Table:
    """pf_events as revision 0001 has it."""
    return sa.Table(
        "pf_events", sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Text(), sa.ForeignKey("pf_runs.run_id"), nullable=False),
        sa.Column("step", sa.Integer()),
        sa.Column("node_name", sa.Text()),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("action", sa.Text()),
        sa.Column("elapsed_ms", sa.Float().with_variant(sa.REAL(), "sqlite")),
        sa.Column("error_msg", sa.Text()),
        sa.Column("ts", sa.Text(), nullable=False),
    )


def upgrade() -> None:
    with op.batch_alter_table("pf_runs", copy_from=_runs_table(OLD_CHECK)) as batch:
        batch.drop_constraint(CHECK_NAME, type_="check")
        for name in RUN_COLUMNS:
            batch.add_column(sa.Column(name, sa.Text()))
        batch.create_check_constraint(CHECK_NAME, NEW_CHECK)
    for name, columns in RUN_INDEXES.items():
        op.create_index(name, "pf_runs", columns)
    op.create_table(
        "pf_run_inputs",
        sa.Column("run_id", sa.Text(), sa.ForeignKey("pf_runs.run_id"), primary_key=True),
        sa.Column("graph_json", sa.Text()),
        sa.Column("input_json", sa.Text()),
    )
    # On SQLite both tables are rebuilt without AUTOINCREMENT: it rewrites the
    # sqlite_sequence page on every insert, a sixth of a step's commit. Ids are kept.
    rebuild = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("pf_checkpoints", recreate=rebuild,
                              copy_from=_checkpoints_table()) as batch:
        batch.add_column(sa.Column("kind", sa.Text(), nullable=False, server_default="full"))
        batch.add_column(sa.Column("next_node", sa.Text()))
        batch.add_column(sa.Column("excluded", sa.Text()))
    with op.batch_alter_table("pf_events", recreate=rebuild,
                              copy_from=_events_table()) as batch:
        batch.add_column(sa.Column("detail", sa.Text()))
    op.create_index("ix_pf_events_run_id_id", "pf_events", ["run_id", "id"])


def downgrade() -> None:
    bind = op.get_bind()
    _deltas_to_full(bind)
    runs = sa.table("pf_runs", sa.column("status"), sa.column("error_msg"))
    bind.execute(sa.update(runs).where(runs.c.status == "cancelled")
                 .values(status="failed", error_msg=sa.func.coalesce(runs.c.error_msg,
                                                                     "cancelled")))
    op.drop_table("pf_run_inputs")
    op.drop_index("ix_pf_events_run_id_id", table_name="pf_events")
    keep = {"sqlite_autoincrement": True}  # 0.2's tables have AUTOINCREMENT
    rebuild = "always" if bind.dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("pf_events", table_kwargs=keep, recreate=rebuild) as batch:
        batch.drop_column("detail")
    with op.batch_alter_table("pf_checkpoints", table_kwargs=keep, recreate=rebuild) as batch:
        batch.drop_column("excluded")
        batch.drop_column("next_node")
        batch.drop_column("kind")
    for name in RUN_INDEXES:
        op.drop_index(name, table_name="pf_runs")
    with op.batch_alter_table("pf_runs", copy_from=_runs_table(NEW_CHECK)) as batch:
        batch.drop_constraint(CHECK_NAME, type_="check")
        for name in RUN_COLUMNS:
            batch.drop_column(name)
        batch.create_check_constraint(CHECK_NAME, OLD_CHECK)


def _deltas_to_full(bind: sa.engine.Connection) -> None:
    """Rewrite every delta checkpoint as the full store it stands for (0.2 reads only those).

    Self-contained on purpose: a migration must not depend on today's code.
    """
    cps = sa.table("pf_checkpoints", sa.column("id"), sa.column("run_id"), sa.column("step"),
                   sa.column("store_json"), sa.column("kind"))
    run_ids = bind.execute(sa.select(cps.c.run_id).where(cps.c.kind == "delta").distinct())
    for (run_id,) in run_ids.all():
        rows = bind.execute(sa.select(cps.c.id, cps.c.store_json, cps.c.kind)
                            .where(cps.c.run_id == run_id).order_by(cps.c.step)).all()
        state: dict[str, object] = {}
        for row_id, text, kind in rows:
            payload = json.loads(text)
            if kind != "delta":
                state = payload
                continue
            state.update(payload.get("set", {}))
            for key in payload.get("del", ()):
                state.pop(key, None)
            for key, items in payload.get("append", {}).items():
                state[key] = [*state[key], *items]
            bind.execute(sa.update(cps).where(cps.c.id == row_id)
                         .values(store_json=json.dumps(state, ensure_ascii=False),
                                 kind="full"))
